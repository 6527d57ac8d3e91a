#!/bin/bash
# run_pretrain.sh NAME ENCODER [flags]: stage 1 on EXP/corpus4, then stage 3 CTC only (30 s batches) from it
name=$1; encoder=$2; shift 2
EXP=${EXP:-runs/exp}; out=$EXP/runs/pt_$name; rm -rf "$out"; mkdir -p "$out"
/usr/bin/time -f "wall %e s" .venv/bin/python -m avalign.training.train_pretrain --corpus "$EXP/corpus4" --init_encoder "$encoder" \
  --output_dir "$out" --codebook_size 1024 --mask_probability 0.02 --mask_block_size 24 --max_steps 600 --warmup_steps 60 \
  --learning_rate 0.002 --max_seconds_per_batch 30 --save_steps 0 --logging_steps 25 --eval_steps 200 --progress false \
  --mixed_precision bf16 "$@" > "$out/log" 2>&1
grep -E "dev:|wall" "$out/log" | sed 's/.*INFO //'
"$(dirname "$0")/run_asr.sh" "ft_$name" "$out" --ctc_loss_weight 1.0 --max_seconds_per_batch 30 --max_steps "${FT_STEPS:-300}" \
  --warmup_steps 100 --eval_steps 100 --mixed_precision bf16 ${FT_FLAGS:-}
