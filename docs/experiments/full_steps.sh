#!/bin/bash
# Step times of the full preset's configs on this machine: 4 steps of each *_full.yaml on the demo run's corpus
EXP=${EXP:-runs/exp}; C=runs/demo/corpus; O=$EXP/full_steps; rm -rf "$O"; mkdir -p "$O"
common="--max_steps 4 --warmup_steps 1 --save_steps 0 --eval_steps 0 --progress false"
.venv/bin/python -m avalign.training.train_pretrain --config training/configs/pretrain_full.yaml --corpus $C \
  --output_dir "$O/pretrain" $common > "$O/pretrain.log" 2>&1
.venv/bin/python -m avalign.training.train_align --config training/configs/align_full.yaml --corpus $C \
  --init_encoder "$O/pretrain" --teacher runs/demo/teacher --embeddings_dir runs/demo/embeddings \
  --output_dir "$O/align" $common > "$O/align.log" 2>&1
for freeze in 500 0; do  # the head warm-up (encoder frozen) and after it
  .venv/bin/python -m avalign.training.train_asr --config training/configs/asr_full.yaml --corpus $C \
    --init_encoder "$O/align" --output_dir "$O/asr_freeze$freeze" --freeze_encoder_steps $freeze $common > "$O/asr_freeze$freeze.log" 2>&1
done
for stage in pretrain align asr_freeze500 asr_freeze0; do .venv/bin/python -c "
import json; m = json.load(open('$O/$stage/metrics.json')); steps = m['global_step']
print('$stage', steps, 'steps', round(m['audio_seconds'] / steps), 'audio s / step', round(m['train_seconds'] / steps, 2), 's / step')"
done
