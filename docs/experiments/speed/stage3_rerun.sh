#!/bin/bash
# The demo's stage 3 and evaluations again, in a fresh folder beside a finished `make demo` run (stages 0-2 linked,
# not copied), so that a change to stage 3's speed is timed as `make demo` runs it; then each model compared bit for
# bit with the source run's. Usage: docs/experiments/speed/stage3_rerun.sh runs/demo runs/native-rerun
set -e
SOURCE=$1 OUT=$2
mkdir -p $OUT
for stage in corpus teacher embeddings pretrain align scratch; do ln -sfn $(realpath $SOURCE/$stage) $OUT/$stage; done
.venv/bin/python - $SOURCE $OUT <<'PY'
import json, sys
from pathlib import Path
source, out = map(Path, sys.argv[1:])
state = json.loads((source / "pipeline_state.json").read_text())
keep = ("corpus", "teacher", "pretrain", "align", "scratch")
(out / "pipeline_state.json").write_text(json.dumps({"preset": state["preset"], "timings_seconds": {
    stage: seconds for stage, seconds in state["timings_seconds"].items() if stage in keep}}, indent=2))
PY
lscpu | grep "Model name"; .venv/bin/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"
date
time .venv/bin/python -m avalign.training.pipeline --preset demo --output-dir $OUT
date
.venv/bin/python - $SOURCE $OUT <<'PY'
import sys
from pathlib import Path
import torch
from safetensors.torch import load_file
source, out = map(Path, sys.argv[1:])
for model in sorted((out / "asr").glob("*/model.safetensors")):
    a, b = load_file(model), load_file(source / model.relative_to(out))
    print(model.parent.name, "identical" if a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
          else "DIFFERENT")
PY
