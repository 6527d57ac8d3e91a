#!/bin/bash
# Issue 20, tenth pass: the zero-shot romanizers trained on CTC alone (the demo's zero-shot protocol and the unified
# model read only their CTC head), both encoders side by side at one thread each, then a unified model over each and
# its dev evaluation with the cascades. Needs runs/demo with the roman pipeline's text LM and de-romanizer.
#   nohup docs/experiments/unified/ctc_only_romanizers.sh > runs/unified-exp/ctc-only.log 2>&1 &
set -e
export OMP_NUM_THREADS=1
d=docs/experiments/unified
ENCODER=align $d/train_romanizer.sh ctc-aligned --max_steps 800 --ctc_loss_weight 1.0 &
ENCODER=pretrain $d/train_romanizer.sh ctc-baseline --max_steps 800 --ctc_loss_weight 1.0 &
wait
for system in aligned baseline; do
    CASCADES=1 ROMANIZER=runs/unified-exp/romanizer-ctc-$system $d/train_variant.sh ctc-$system &
done
wait
