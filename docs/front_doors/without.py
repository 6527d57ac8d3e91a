"""Issue 12 calls where avalign cannot be imported: remote code, the stock TDT export."""
import builtins, json, sys, warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import NO_AVALIGN  # noqa: E402  (the import blocker the tests use)

exec(NO_AVALIGN)
asked = []
builtins.input = lambda *a: asked.append(a) or "n"
from transformers import AutoProcessor, ParakeetForTDT, pipeline
from transformers.utils import logging as hf_logging
hf_logging.set_verbosity_error()
folder = sys.argv[1]
clips = [f"runs/front_doors/{l}.flac" for l in ("hi", "bn", "ta", "en")]
print(f">>> asr = pipeline('automatic-speech-recognition', model='{folder}', trust_remote_code=True)  # no avalign")
asr = pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)
print(type(asr).__module__, type(asr.model).__module__)
print(">>> asr(clips, batch_size=2)"); print(asr(clips, batch_size=2))
print(">>> asr(clips, batch_size=2, decoding='ctc')"); print(asr(clips, batch_size=2, decoding="ctc"))
for trust in (True, False):
    p = AutoProcessor.from_pretrained(folder, trust_remote_code=trust)
    print(f">>> AutoProcessor.from_pretrained(folder, trust_remote_code={trust}) -> {type(p).__name__}; prompts: {len(asked)}")
print(">>> stock ParakeetForTDT export in the stock pipeline")
processor = AutoProcessor.from_pretrained(folder, subfolder="parakeet-tdt")
tdt = ParakeetForTDT.from_pretrained(folder, subfolder="parakeet-tdt")
stock = pipeline("automatic-speech-recognition", model=tdt, tokenizer=processor.tokenizer, feature_extractor=processor.feature_extractor)
print(type(stock).__name__, stock.type)
import soundfile
arrays = [soundfile.read(path, dtype="float32")[0] for path in clips]  # the stock pipeline reads paths with FFmpeg
print(">>> stock(arrays, batch_size=2)"); print(stock(arrays, batch_size=2))
print("prompts in total:", len(asked))
