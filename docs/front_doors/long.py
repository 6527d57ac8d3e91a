import io, json, warnings
import numpy as np, soundfile as sf
warnings.filterwarnings("ignore")
import avalign.modeling  # noqa
from avalign.training.data.loaders import load_embedded
from avalign.training.evaluation.asr_error_rates import error_rates
from transformers import pipeline
from transformers.utils import logging as hf_logging
hf_logging.set_verbosity_error()
test = load_embedded("runs/demo/corpus")["test"].filter(lambda r: r["language"] == "hi").select(range(40))
asr = pipeline("automatic-speech-recognition", model="runs/demo/asr/aligned-f1.0", trust_remote_code=True)
gap = np.zeros(8000, np.float32)
refs, hyps = {"chunked": [], "whole": []}, {"chunked": [], "whole": []}
for start in range(0, 40, 4):
    rows = test.select(range(start, start + 4))
    audio = np.concatenate([np.concatenate([sf.read(io.BytesIO(r["audio"]["bytes"]), dtype="float32")[0], gap]) for r in rows])
    reference = " ".join(r["transcript"] for r in rows)
    for name, kwargs in (("chunked", {"chunk_length_s": 4, "stride_length_s": 0.6}), ("whole", {})):
        hyps[name].append(asr(audio, **kwargs)["text"]); refs[name].append(reference)
    if start == 0:
        print(f">>> asr(4 Hindi test clips with 0.5-s gaps, {len(audio)/16000:.1f} s, chunk_length_s=4, stride_length_s=0.6, return_timestamps='word')")
        print("reference:", reference)
        print(json.dumps(asr(audio, chunk_length_s=4, stride_length_s=0.6, return_timestamps="word"), ensure_ascii=False))
        print(">>> the same without chunks:", asr(audio)["text"])
for name in hyps:
    print(name, "CER over 10 such 4-clip recordings:", round(100 * error_rates(hyps[name], refs[name])["cer"], 1), "%")
