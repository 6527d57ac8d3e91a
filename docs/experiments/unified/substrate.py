"""Issue 20, third pass: what the unified-model experiments read, built early on a fresh machine: the demo's stages
0-2 (the same stage names and markers as the pipeline, so `make demo` skips them later), then, two processes of one
thread each, the text LM and the aligned encoder's zero-shot romanizer (Bengali held out).

    nohup .venv/bin/python docs/experiments/unified/substrate.py > /tmp/logs/substrate.log 2>&1 &
"""

import os
import subprocess
import sys
from pathlib import Path

from avalign.training import pipeline as P

P.setup_logging()
output_dir = Path("runs/demo")
if len(sys.argv) == 1:  # the parent: stages 0-2 on both cores, then the two workers
    run = P.Pipeline("demo", output_dir)
    corpus, teacher, embeddings, pretrain = P.run_stages_0_1(run)
    run.stage("align", output_dir / "align" / "metrics.json", lambda: run.train(
        "align", "align", corpus=corpus, init_encoder=pretrain, teacher=teacher, embeddings_dir=embeddings,
        output_dir=output_dir / "align"))  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, __file__, job], env=env) for job in ("text_lm", "romanizer")]
    sys.exit(max(worker.wait() for worker in workers))
run, corpus, cache = P.Pipeline("demo", output_dir), output_dir / "corpus", output_dir / "romanization.json"
if sys.argv[1] == "text_lm":
    spec = run.preset
    run.stage("text_lm", output_dir / "text_lm" / "metrics.json", lambda: P.text_lm.train_text_lm(
        P.text_lm_texts(corpus, cache, run.languages), output_dir / "text_lm", steps=spec.text_lm_steps,
        config=spec.text_lm_config))  # fmt: skip
else:
    folder = output_dir / "asr" / "zeroshot-bn-aligned"
    run.stage("asr/zeroshot-bn-aligned", folder / "metrics.json", lambda: run.train(
        "asr", "asr", corpus=corpus, init_encoder=output_dir / "align", output_dir=folder, targets="roman",
        romanization_cache=cache, languages=[code for code in run.languages if code != "bn"]))  # fmt: skip
