#!/bin/bash
# run_finetune.sh NAME ENCODER [flags]: stage 3 with asr_demo.yaml on $CORPUS (a demo corpus with dev_ood), then CER
# on dev and dev_ood
name=$1; encoder=$2; shift 2
EXP=${EXP:-runs/exp}; CORPUS=${CORPUS:-runs/demo/corpus}; out=$EXP/runs/ft_$name; rm -rf "$out"; mkdir -p "$out"
/usr/bin/time -f "wall %e s" .venv/bin/python -m avalign.training.train_asr --config training/configs/asr_demo.yaml \
  --corpus "$CORPUS" --init_encoder "$encoder" --output_dir "$out" --progress false --save_steps 0 "$@" > "$out/log" 2>&1
grep -E "dev:|wall" "$out/log" | sed 's/.*INFO //'
.venv/bin/python -m avalign.training.evaluate_asr --model "$out" --name m --corpus "$CORPUS" --splits dev dev_ood \
  --output-dir "$out/eval" > "$out/eval.log" 2>&1
.venv/bin/python -c "
import json; r = json.load(open('$out/eval/results.json'))['asr']['m']['1.0']
print({split: {d: round(r[split][d]['overall']['cer'], 3) for d in ('tdt', 'ctc')} for split in r})"
