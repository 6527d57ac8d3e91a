"""Issue 12 calls on the demo run, with avalign installed."""
import builtins, io, json, os, warnings
import numpy as np, soundfile as sf
warnings.filterwarnings("ignore")
asked = []
builtins.input = lambda *a: asked.append(a) or "n"
import avalign.modeling  # noqa
from avalign.training.data.loaders import load_embedded
from transformers import AutoProcessor, pipeline
from transformers.utils import logging as hf_logging
hf_logging.set_verbosity_error()
RUN = "runs/demo"
os.makedirs("runs/front_doors", exist_ok=True)
test = load_embedded(f"{RUN}/corpus")["test"]
rows = [next(r for r in test if r["language"] == lang) for lang in ("hi", "bn", "ta", "en")]
clips = [sf.read(io.BytesIO(r["audio"]["bytes"]), dtype="float32")[0] for r in rows]
for i, r in enumerate(rows):
    sf.write(f"runs/front_doors/{r['language']}.flac", clips[i], 16000)
    print(f"REF {r['language']}: {r['transcript']}  ({len(clips[i]) / 16000:.2f} s)")
print(">>> asr = pipeline('automatic-speech-recognition', model='runs/demo/asr/aligned-f1.0', trust_remote_code=True)")
asr = pipeline("automatic-speech-recognition", model=f"{RUN}/asr/aligned-f1.0", trust_remote_code=True)
print(type(asr).__name__)
print(">>> asr('runs/front_doors/hi.flac')"); print(asr("runs/front_doors/hi.flac"))
print(">>> asr('runs/front_doors/hi.flac', decoding='ctc')"); print(asr("runs/front_doors/hi.flac", decoding="ctc"))
print(">>> asr([bn, ta, en], batch_size=2)"); print(asr([f"runs/front_doors/{l}.flac" for l in ("bn", "ta", "en")], batch_size=2))
long = np.concatenate([np.concatenate([c, np.zeros(8000, np.float32)]) for c in clips])
print(f">>> asr(four clips joined, {len(long) / 16000:.1f} s, chunk_length_s=4, return_timestamps='word')")
print(json.dumps(asr(long, chunk_length_s=4, return_timestamps="word"), ensure_ascii=False))
print(">>> asr(the same, no chunks)"); print(asr(long))
for name, bad in (("empty", np.zeros(0, np.float32)), ("NaN", np.full(16000, np.nan, np.float32)),
                  ("rate 0", {"raw": clips[0], "sampling_rate": 0})):
    try:
        asr(bad)
    except ValueError as error:
        print(f">>> asr({name}) -> ValueError: {error}")
print(">>> asr({'raw': hi at 8 kHz, 'sampling_rate': 8000})")
from scipy.signal import resample_poly
print(asr({"raw": resample_poly(clips[0], 1, 2).astype(np.float32), "sampling_rate": 8000}))
print(">>> AutoProcessor.from_pretrained('runs/demo/asr/aligned-f1.0')")
p = AutoProcessor.from_pretrained(f"{RUN}/asr/aligned-f1.0")
print(type(p).__name__, type(p.feature_extractor).__name__, type(p.tokenizer).__name__, "prompts:", len(asked))
