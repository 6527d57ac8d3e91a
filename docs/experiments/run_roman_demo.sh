#!/bin/bash
# Issue 20: the roman pipeline (romanized stage 3 at f0.1, the zero-shot romanizers, the de-romanizer, the text-only
# LM and the unified models) in OUT (default runs/demo), next to `make demo` (stages 0-2 shared; the unified model is
# compared on the seen languages with the native run's f1.0 models, so those must be finished by the time it is
# evaluated). The preset's own --jobs (2 for the demo's roman run) unless JOBS is set.
# Usage: nohup docs/experiments/run_roman_demo.sh > runs/roman-demo.log 2>&1 &
set -e
lscpu | grep "Model name"; .venv/bin/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"
date
time OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/python -m avalign.training.pipeline --preset demo \
    --output-dir ${OUT:-runs/demo} --targets roman ${JOBS:+--jobs $JOBS}
date
