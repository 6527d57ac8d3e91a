#!/bin/bash
# pruned_dev.sh FRACTION STEPS SEEDS...: stage 3 (asr_demo.yaml) from the demo's aligned encoder with the exact TDT
# loss and with the pruned one (--tdt_prune_range $PRUNE, default 5), two runs side by side at one thread each, per
# seed; dev and dev_ood CER (TDT and CTC) through run_finetune.sh. Needs runs/demo from `make demo`.
fraction=$1; steps=$2; shift 2
PRUNE=${PRUNE:-5}; ENCODER=${ENCODER:-runs/demo/align}; export EXP=${EXP:-runs/pruned}
grep -m1 "model name" /proc/cpuinfo; .venv/bin/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"
for seed in "$@"; do
  common="--train_fraction $fraction --max_steps $steps --seed $seed"
  OMP_NUM_THREADS=1 bash docs/experiments/run_finetune.sh "exact-f$fraction-s$seed" "$ENCODER" $common \
    > "/tmp/pruned_dev_exact_$seed.out" 2>&1 &
  OMP_NUM_THREADS=1 bash docs/experiments/run_finetune.sh "pruned$PRUNE-f$fraction-s$seed" "$ENCODER" $common \
    --tdt_prune_range "$PRUNE" > "/tmp/pruned_dev_pruned_$seed.out" 2>&1 &
  wait
  for kind in exact pruned; do echo "== $kind seed $seed"; cat "/tmp/pruned_dev_${kind}_$seed.out"; done
done
