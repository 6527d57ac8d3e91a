#!/bin/bash
# variant_dev.sh NAME "FLAGS" FRACTION:STEPS:SEED...: stage 3 (asr_demo.yaml + FLAGS) from the demo's aligned encoder as
# run_finetune.sh NAME-fFRACTION-sSEED, two runs at a time at one thread each; dev and dev_ood CER, for
# compare_pruned.py against pruned_dev.sh's runs of the same seeds. It runs the code that `avalign` imports: for a
# variant in a git worktree, PYTHONPATH names a folder whose avalign/ links the worktree's modeling/ and training/.
name=$1; flags=$2; shift 2
export ENCODER=${ENCODER:-runs/demo/align} EXP=${EXP:-runs/pruned} CORPUS=${CORPUS:-runs/demo/corpus} name flags
grep -m1 "model name" /proc/cpuinfo
.venv/bin/python -c "import torch, avalign.modeling as m; print(torch.backends.cpu.get_cpu_capability(), m.__file__)"
run() {
  IFS=: read -r fraction steps seed <<< "$1"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 bash docs/experiments/run_finetune.sh "$name-f$fraction-s$seed" "$ENCODER" \
    --train_fraction "$fraction" --max_steps "$steps" --seed "$seed" $flags > "/tmp/variant_dev_$name-$1.out" 2>&1
  echo "== $name f$fraction s$seed"; cat "/tmp/variant_dev_$name-$1.out"
}
export -f run
printf '%s\n' "$@" | xargs -P 2 -I{} bash -c 'run {}'
