"""Issue 20, fourteenth pass: the text LM's cost with English in the prompt form (`text_lm_texts(latin=True)`) against
without, 300 steps each (its tokenizer included), twice, back to back at one thread.

    OMP_NUM_THREADS=1 .venv/bin/python docs/experiments/unified/lm_time.py
"""

import time
from pathlib import Path

import torch

from avalign.training import text_lm
from avalign.training.pipeline import PRESETS, text_lm_texts

torch.set_num_threads(1)
run, spec = Path("runs/roman-stop39"), PRESETS["demo"]
print(open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0], torch.backends.cpu.get_cpu_capability())
for latin in (False, True, False, True):
    texts = text_lm_texts(run / "corpus", run / "romanization.json", spec.languages, latin=latin)
    start = time.perf_counter()
    text_lm.train_text_lm(texts, f"/tmp/lm-time-{latin}", steps=300, config=spec.text_lm_config)
    print(f"latin {latin}: {len(texts)} texts, {time.perf_counter() - start:.1f} s for 300 steps", flush=True)
