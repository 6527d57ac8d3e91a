#!/bin/bash
# run_asr.sh NAME ENCODER [flags]: stage 3 on EXP/corpus4; dev curve in EXP/runs/NAME/log (flags override these)
name=$1; encoder=$2; shift 2
EXP=${EXP:-runs/exp}; out=$EXP/runs/$name; rm -rf "$out"; mkdir -p "$out"
/usr/bin/time -f "wall %e s" .venv/bin/python -m avalign.training.train_asr --corpus "$EXP/corpus4" --init_encoder "$encoder" \
  --output_dir "$out" --vocab_size 450 --decoder_hidden_size 160 --max_steps 300 --warmup_steps 50 --learning_rate 0.001 \
  --max_seconds_per_batch 60 --save_steps 0 --logging_steps 25 --eval_steps 50 --progress false "$@" > "$out/log" 2>&1
grep -E "dev:|wall" "$out/log" | sed 's/.*INFO //'
