#!/bin/bash
# Issue 20, fourth pass: a zero-shot romanizer variant (stage 3, roman targets, Bengali held out) over the demo run's
# aligned encoder, as the pipeline trains asr/zeroshot-bn-aligned but for the overrides given.
# Usage: train_romanizer.sh NAME [train_asr overrides...]; the folder is runs/unified-exp/romanizer-NAME
#   OMP_NUM_THREADS=1 nohup docs/experiments/unified/train_romanizer.sh steps800 --max_steps 800 > /tmp/logs/rom800.log 2>&1 &
set -e
name=$1; shift
run=${RUN:-runs/demo}; out=runs/unified-exp/romanizer-$name
lscpu | grep "Model name"; .venv/bin/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"
start=$(date +%s)
.venv/bin/python training/train_asr.py --config training/configs/asr_demo.yaml --corpus $run/corpus \
    --init_encoder $run/${ENCODER:-align} --targets roman --romanization_cache $run/romanization.json \
    --languages hi ta en --output_dir $out --resume true --progress false "$@"
echo "train seconds: $(( $(date +%s) - start ))"
