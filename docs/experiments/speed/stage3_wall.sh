#!/bin/bash
# stage3_wall.sh: the pipeline's aligned-f0.25 stage-3 run (asr_demo.yaml, 400 steps, seed 0) alone, with the exact
# TDT loss and with the recipe's pruned one, one after the other on a quiet machine: wall seconds and dev CER.
EXP=${EXP:-runs/stage3_wall}; mkdir -p "$EXP"
grep -m1 "model name" /proc/cpuinfo; .venv/bin/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"
grep -v "tdt_prune_range\|pruned TDT loss\|CTC-only one instead" training/configs/asr_demo.yaml > "$EXP/asr_demo_exact.yaml"
for loss in exact pruned; do
  config=training/configs/asr_demo.yaml; [ $loss = exact ] && config="$EXP/asr_demo_exact.yaml"
  /usr/bin/time -f "$loss wall %e s" .venv/bin/python -m avalign.training.train_asr --config "$config" \
    --corpus runs/demo/corpus --init_encoder runs/demo/align --train_fraction 0.25 --max_steps 400 \
    --output_dir "$EXP/$loss" --progress false --save_steps 0 > "$EXP/$loss.log" 2>&1
  grep -E "dev:|wall" "$EXP/$loss.log" | sed 's/.*INFO //' | tail -2
done
