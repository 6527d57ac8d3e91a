"""Share of transcribed clips whose labels (+ a blank between repeats) outnumber the encoder frames (finding 1)."""
import os

import numpy as np

from avalign.modeling import train_tokenizer
from avalign.training.data.splits import load_splits

rows = load_splits(os.path.join(os.environ.get("EXP", "runs/exp"), "corpus4"), ["train"])
texts, languages = list(rows["transcript"]), np.array(rows["language"])
feature_frames = np.floor(np.array(rows["duration"]) * 100)  # 10 ms hop
for vocab_size in (387, 450, 512, 640, 1024):
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, shrink_to_fit=True)
    ids = tokenizer(texts)["input_ids"]
    needed = np.array([len(x) + sum(a == b for a, b in zip(x, x[1:])) for x in ids])
    for subsampling in (4, 8):
        unfit = needed > np.floor((feature_frames - 1) / subsampling) + 1
        per_language = {str(lang): round(float(100 * unfit[languages == lang].mean()), 1) for lang in sorted(set(languages))}
        print(len(tokenizer), f"{subsampling}x", f"unfit {100 * unfit.mean():.1f} %", per_language)
