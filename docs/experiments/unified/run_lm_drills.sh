#!/bin/bash
# Issue 20, sixth pass: does the text LM read its prompt once its texts include reading drills (random words of the
# training-side sentences)? Two LMs side by side at one thread each on the stop-28 build (same texts as today's
# corpus), with the drills at seeds 0 (what the pipeline then trains) and 1; the control is that build's own LM (the
# recipe before: sentences only, seed 0; `text_lm_variant.py --steps 0`). Each scores the LM cascade on dev's true
# romanizations. (`run sentences-s1 --no-drills --seed 1` is the control's other seed.)
# Usage: nohup docs/experiments/unified/run_lm_drills.sh > runs/lm-exp/drills.log 2>&1 &
set -e
lscpu | grep "Model name"; .venv/bin/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"
RUN=${RUN:-runs/stop28-demo}
mkdir -p runs/lm-exp
run() {  # name, then text_lm_variant.py's options
    local name=$1; shift
    OMP_NUM_THREADS=1 .venv/bin/python docs/experiments/unified/text_lm_variant.py --run "$RUN" --steps 5000 \
        --out runs/lm-exp/$name "$@" > runs/lm-exp/$name.log 2>&1
}
run drills-s0 --seed 0 &
run drills-s1 --seed 1 &
wait
date
