#!/bin/bash
# Issue 20: one unified-model variant over the demo run's zero-shot romanizer and text LM (Bengali held out), then
# its dev evaluation (dev_eval.py). Usage: train_variant.sh NAME [train_speech_llm overrides...]
#   OMP_NUM_THREADS=1 nohup docs/experiments/unified/train_variant.sh steps2000 --max_steps 2000 > /tmp/logs/steps2000.log 2>&1 &
set -e
name=$1; shift
run=${RUN:-runs/demo}; out=runs/unified-exp/$name
romanizer=${ROMANIZER:-$run/asr/zeroshot-bn-${SYSTEM:-aligned}}  # ROMANIZER=DIR: a romanizer variant
lscpu | grep "Model name"; .venv/bin/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"
start=$(date +%s)
.venv/bin/python training/train_speech_llm.py --config training/configs/speech_llm_demo.yaml --corpus $run/corpus \
    --romanizer $romanizer --llm ${LLM:-$run/text_lm} --held_out_languages bn \
    --languages hi bn ta en --romanization_cache $run/romanization.json --output_dir $out --resume true \
    --progress false "$@"
echo "train seconds: $(( $(date +%s) - start ))"
# CASCADES=1: also the romanizer and both cascades on dev (held-out and seen languages), and the no-speech control;
# the romanizer and stage 3 read with CTC, as the demo pipeline reads them (DECODING=tdt: with TDT)
skip=--skip-cascades; [ -n "$CASCADES" ] && skip=
.venv/bin/python docs/experiments/unified/dev_eval.py --run $run --romanizer $romanizer --unified $out $skip --decoding ${DECODING:-ctc} --out $out/dev.json
