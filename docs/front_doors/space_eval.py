"""Issue 12 calls: evaluate by path (offline) vs evaluate_asr's figures, the Vaani config error, the Space's /compare."""
import json, os, warnings
warnings.filterwarnings("ignore")
os.environ.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
import evaluate
RUN = "runs/demo"
records = [json.loads(line) for line in open(f"{RUN}/eval/f1.0/predictions-aligned-test-tdt.jsonl", encoding="utf-8")]
results = json.load(open(f"{RUN}/eval/f1.0/results.json"))["asr"]["aligned"]["1.0"]["test"]["tdt"]
print(">>> metric = evaluate.load('OUT/metric/avalign-asr-error-rates.py')  # the publish --dry-run metric folder")
metric = evaluate.load("runs/front_doors/published/metric/avalign-asr-error-rates.py")
scores = metric.compute(predictions=[r["hypothesis"] for r in records], references=[r["reference"] for r in records],
                        languages=[r["language"] for r in records])
print({k: v for k, v in scores.items() if k != "per_language"}, {k: round(v["cer"], 4) for k, v in scores["per_language"].items()})
print("evaluate_asr's results.json:", {k: results["overall"][k] for k in ("wer", "cer")},
      {k: round(v["cer"], 4) for k, v in results["per_language"].items()})
from avalign.training.data.loaders import load_vaani
try:
    load_vaani(["Karnataka_Bangalore"])
except ValueError as error:
    print(f">>> load_vaani(['Karnataka_Bangalore']) -> ValueError: {error}")
from avalign.spaces import app
from gradio_client import Client, handle_file
demo = app.main(["--model", RUN, "--port", "7871"], prevent_thread_lock=True)
client = Client("http://127.0.0.1:7871/", verbose=False)
print(">>> Client(space).predict(handle_file('hi.flac'), api_name='/compare')")
print(json.dumps(client.predict(handle_file("runs/front_doors/hi.flac"), api_name="/compare"), ensure_ascii=False))
demo.close()
