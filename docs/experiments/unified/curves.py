"""Dev curves of stage-3 / unified runs from their metrics.json `eval_history`: one line per run.
    python docs/experiments/unified/curves.py runs/demo/asr/zeroshot-bn-aligned runs/unified-exp/romanizer-ctc-aligned"""
import json
import sys
from pathlib import Path

for folder in map(Path, sys.argv[1:]):
    metrics = json.loads((folder / "metrics.json").read_text())
    keys = [key for key in ("ctc_cer", "tdt_cer", "cer") if key in metrics["eval_history"][0]]
    curves = {key: " / ".join(f"{100 * entry[key]:.1f}" for entry in metrics["eval_history"]) for key in keys}
    steps = [entry.get("step") for entry in metrics["eval_history"]]
    print(folder, f"train {metrics.get('train_seconds', 0):.0f} s", "steps", steps, curves)
