"""Issue 20, eighth pass: does a unified model listen to the held-out language, or write its prior?

    OMP_NUM_THREADS=1 .venv/bin/python docs/experiments/unified/listening.py --unified runs/demo/unified/zeroshot-bn-aligned

Decodes the held-out language's dev utterances once, then scores each hypothesis against its own reference and
against the references of other utterances of the language (every other one, averaged). A model that hears the
utterance is closer to its own reference than to the others'; one that writes a fluent sentence regardless scores
alike on both. The same for the seen languages, per language, as the positive control.
"""

import argparse
import json
from pathlib import Path

import jiwer

from avalign.modeling import SpeechLLMForConditionalGeneration
from avalign.training import train_speech_llm
from avalign.training.data.splits import load_splits


def own_and_others(records: list[dict]) -> dict:
    """CER % of each hypothesis against its own reference, and against each other utterance's (mean)."""
    hypotheses = [r["hypothesis"] or " " for r in records]
    references = [r["reference"] for r in records]
    own = jiwer.cer(references, hypotheses)
    others = [jiwer.cer(reference, hypothesis) for i, hypothesis in enumerate(hypotheses)
              for j, reference in enumerate(references) if i != j and reference != references[i]]  # fmt: skip
    return {"utterances": len(records), "own_reference": round(100 * own, 1),
            "other_references": round(100 * sum(others) / len(others), 1)}  # fmt: skip


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--held-out", default="bn")
    parser.add_argument("--unified", type=Path, nargs="+", required=True)
    parser.add_argument("--seen-utterances", type=int, default=60)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dev = load_splits(str(args.run / "corpus"), ["dev"])
    held = dev.filter(lambda code: code == args.held_out, input_columns="language")
    seen = dev.filter(lambda code: code != args.held_out, input_columns="language").shuffle(seed=0)
    seen = seen.select(range(min(args.seen_utterances, len(seen))))
    results = {}
    for folder in args.unified:
        model = SpeechLLMForConditionalGeneration.from_pretrained(folder)
        records = train_speech_llm.transcribe(model, seen) + train_speech_llm.transcribe(model, held)
        by_language = {}
        for record in records:
            by_language.setdefault(record["language"], []).append(record)
        results[str(folder)] = {language: own_and_others(rows) for language, rows in sorted(by_language.items())}
        print(folder, json.dumps(results[str(folder)]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
