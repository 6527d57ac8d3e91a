import io, time, warnings
import numpy as np, soundfile as sf, torch
warnings.filterwarnings("ignore")
import avalign.modeling  # noqa
from avalign.training.data.loaders import load_embedded
from transformers import AutoProcessor, ParakeetForTDT, pipeline
from transformers.utils import logging as hf_logging
hf_logging.set_verbosity_error()
torch.set_num_threads(2)
test = load_embedded("runs/demo/corpus")["test"].select(range(0, 160, 2))
clips = [sf.read(io.BytesIO(r["audio"]["bytes"]), dtype="float32")[0] for r in test]
seconds = sum(len(c) for c in clips) / 16000
ours = pipeline("automatic-speech-recognition", model="runs/demo/asr/aligned-f1.0", trust_remote_code=True)
folder = "runs/front_doors/published/asr"
processor = AutoProcessor.from_pretrained(folder, subfolder="parakeet-tdt")
stock = pipeline("automatic-speech-recognition", model=ParakeetForTDT.from_pretrained(folder, subfolder="parakeet-tdt"),
                 tokenizer=processor.tokenizer, feature_extractor=processor.feature_extractor)
for batch in (1, 8):
    results = {}
    for name, asr in (("avalign", ours), ("stock", stock), ("avalign", ours), ("stock", stock)):
        start = time.perf_counter(); texts = [o["text"] for o in asr(clips, batch_size=batch)]
        results.setdefault(name, []).append(time.perf_counter() - start); results[name + "_texts"] = texts
    same = sum(a == b for a, b in zip(results["avalign_texts"], results["stock_texts"]))
    a, s = min(results["avalign"]), min(results["stock"])
    print(f"batch_size {batch}: {len(clips)} clips, {seconds:.0f} s of audio; avalign pipeline {a:.2f} s, stock TDT export {s:.2f} s "
          f"({s / a:.2f}x); identical transcripts {same}/{len(clips)}")
