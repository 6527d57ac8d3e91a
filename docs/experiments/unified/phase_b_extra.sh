#!/bin/bash
# Issue 20, tenth pass: beside ctc_only_romanizers.sh's unified models, one without LoRA dropout over the aligned
# CTC-only romanizer, then the dev evaluation of the pipeline's own (hybrid-romanizer) models as the control.
set -e
export OMP_NUM_THREADS=1
d=docs/experiments/unified
while [ ! -f runs/unified-exp/romanizer-ctc-aligned/metrics.json ]; do sleep 10; done
ROMANIZER=runs/unified-exp/romanizer-ctc-aligned $d/train_variant.sh ctc-aligned-dropout0 --lora_dropout 0.0
for system in aligned baseline; do
    .venv/bin/python $d/dev_eval.py --run runs/demo --system $system --unified runs/demo/unified/zeroshot-bn-$system \
        --decoding ctc --out runs/unified-exp/pipeline-hybrid-$system-dev.json
done
