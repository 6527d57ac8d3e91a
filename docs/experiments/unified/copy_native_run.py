"""Issue 20, eleventh pass: a copy of a finished `make demo` run without any roman-run output, so that
`--targets roman` runs every roman stage afresh in it (what a fresh clone's `make demo` then roman run would do).

    .venv/bin/python docs/experiments/unified/copy_native_run.py runs/demo runs/roman-fast
"""

import json
import shutil
import sys
from pathlib import Path

from avalign.training.pipeline import stage_timings

source, target = map(Path, sys.argv[1:3])
roman = ["deromanizer", "text_lm", "unified", "romanization.json", "report-roman.md", "results-roman.json",
         "plots/learning_curves-roman.png", ".claims", "asr/roman-*", "asr/zeroshot-*", "eval/roman-*", "eval/zeroshot-*"]
shutil.copytree(source, target, symlinks=True)
for pattern in roman:
    for path in target.glob(pattern):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
state_file = target / "pipeline_state.json"
state = json.loads(state_file.read_text())
state["timings_seconds"] = stage_timings(state["timings_seconds"], "native")
state.get("runs", {}).pop("roman", None)
state_file.write_text(json.dumps(state, indent=2))
print(f"{target}: {sorted(state['timings_seconds'])}")
