#!/bin/bash
# run_align.sh NAME ENCODER TEACHER_DIR [flags]: stage 2 on EXP/corpus4 with a dev recall curve
# TEACHER_DIR holds teacher/ and image_embeddings/ (python -m avalign.training.teacher --steps N ...)
name=$1; encoder=$2; teacher=$3; shift 3
EXP=${EXP:-runs/exp}; out=$EXP/runs/al_$name; rm -rf "$out"; mkdir -p "$out"
/usr/bin/time -f "wall %e s" .venv/bin/python -m avalign.training.train_align --corpus "$EXP/corpus4" --init_encoder "$encoder" \
  --teacher "$teacher/teacher" --embeddings_dir "$teacher/image_embeddings" --output_dir "$out" \
  --max_steps 300 --warmup_steps 30 --learning_rate 0.0005 --max_seconds_per_batch 60 --save_steps 0 --logging_steps 25 \
  --eval_steps 50 --progress false --mixed_precision bf16 "$@" > "$out/log" 2>&1
grep -E "dev:|wall|retrieval on" "$out/log" | sed 's/.*INFO //' | cut -c1-250
