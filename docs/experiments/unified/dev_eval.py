"""Issue 20, model selection on dev: every way to the held-out language's native script, and the unified model on the
seen languages, on the `dev` split (test is read once, by the pipeline).

    OMP_NUM_THREADS=1 .venv/bin/python docs/experiments/unified/dev_eval.py --run runs/demo --held-out bn \
        --unified runs/demo/unified/zeroshot-bn-aligned [more unified folders] --out docs/experiments/unified/dev-X.json

Prints, per system, CER % on the held-out dev utterances and the distinct hypotheses; each unified model free and held
to the language's script (`constrain_to_script`); the LM cascade both ways; and a control that uses no speech at all,
a random training-side sentence of the held-out language for each utterance (what a fluent prior alone scores).
"""

import argparse
import json
import platform
import random
import time
from pathlib import Path

import jiwer
import torch
from datasets import load_from_disk

from avalign.modeling import SpeechLLMForConditionalGeneration
from avalign.training import evaluate_asr, train_speech_llm
from avalign.training.data.splits import load_splits
from avalign.training.roman import deromanize
from avalign.training.roman.romanize import with_targets


def cer(records) -> dict:
    references, hypotheses = [r["reference"] for r in records], [r["hypothesis"] or " " for r in records]
    result = {"cer": round(100 * jiwer.cer(references, hypotheses), 1), "distinct": len(set(hypotheses)),
              "references": len(set(references)), "example": hypotheses[0]}  # fmt: skip
    languages = sorted({r["language"] for r in records if "language" in r})
    if len(languages) > 1:  # which language carries the error
        result["per_language"] = {code: cer([r for r in records if r["language"] == code])["cer"] for code in languages}
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--held-out", default="bn")
    parser.add_argument("--system", default="aligned")
    parser.add_argument("--unified", nargs="*", type=Path, default=[])
    parser.add_argument("--seen-utterances", type=int, default=120)
    parser.add_argument("--skip-cascades", action="store_true")
    parser.add_argument("--text-lm", type=Path, help="the LM cascade's LM (default: RUN/text_lm)")
    parser.add_argument("--romanizer", type=Path, help="the cascades' romanizer (default: RUN/asr/zeroshot-LANG-SYSTEM)")
    parser.add_argument("--decoding", default="tdt", choices=("tdt", "ctc"), help="the romanizer's and stage 3's")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    start = time.time()
    cache, language = args.run / "romanization.json", args.held_out
    text_lm = args.text_lm or args.run / "text_lm"
    dev = load_splits(str(args.run / "corpus"), ["dev"])
    held = dev.filter(lambda code: code == language, input_columns="language")
    seen = dev.filter(lambda code: code != language, input_columns="language").shuffle(seed=0)
    seen = seen.select(range(min(args.seen_utterances, len(seen))))
    results = {"cpu": platform.processor() or platform.machine(), "capability": torch.backends.cpu.get_cpu_capability()}
    roman_test = with_targets(held, "roman", cache)
    natives = dict(zip(roman_test["utterance_id"], roman_test["transcript_native"]))
    if not args.skip_cascades:
        model, extractor, tokenizer = evaluate_asr.load_asr_model(
            args.romanizer or args.run / "asr" / f"zeroshot-{language}-{args.system}")
        roman = evaluate_asr.transcribe_dataset(model, extractor, tokenizer, roman_test, args.decoding)
        results["romanized"] = cer(roman)
        cascades = {"cascade_char": deromanize.load_deromanizer(f"char:{args.run / 'deromanizer'}"),
                    "cascade_lm": deromanize.load_deromanizer(f"lm:{text_lm}"),
                    "cascade_lm_constrained": deromanize.load_deromanizer(f"lm:{text_lm}",
                                                                          constrain_to_script=True)}  # fmt: skip
        for name, deromanizer in cascades.items():
            hypotheses = deromanizer.deromanize([r["hypothesis"] for r in roman], [language] * len(roman))
            results[name] = cer([{"reference": natives[r["utterance_id"]], "hypothesis": h} for r, h in zip(roman, hypotheses)])
        seen_roman = with_targets(seen, "roman", cache)  # the same romanizer and LM on the languages it has heard
        seen_natives = dict(zip(seen_roman["utterance_id"], seen_roman["transcript_native"]))
        roman_seen = evaluate_asr.transcribe_dataset(model, extractor, tokenizer, seen_roman, args.decoding)
        results["romanized_seen"] = cer(roman_seen)
        for name in ("cascade_char", "cascade_lm_constrained"):
            hypotheses = cascades[name].deromanize([r["hypothesis"] for r in roman_seen],
                                                   [r["language"] for r in roman_seen])  # fmt: skip
            results[f"{name}_seen"] = cer([{"reference": seen_natives[r["utterance_id"]], "hypothesis": h,
                                            "language": r["language"]}
                                           for r, h in zip(roman_seen, hypotheses)])  # fmt: skip
        print(json.dumps(results, ensure_ascii=False), flush=True)
        pool = [native for code, _, native in deromanize.unique_sentences(
            deromanize.corpus_pairs(load_from_disk(str(args.run / "corpus")), cache))[0] if code == language]  # fmt: skip
        draw = random.Random(0)
        results["prior_only"] = cer([{"reference": natives[u], "hypothesis": draw.choice(pool)} for u in held["utterance_id"]])
    if (args.run / "asr" / f"{args.system}-f1.0").is_dir():  # the native-target stage 3 (make demo's)
        native = evaluate_asr.load_asr_model(args.run / "asr" / f"{args.system}-f1.0")
        results["native_stage3_seen"] = cer(evaluate_asr.transcribe_dataset(*native, seen, args.decoding))
    for folder in args.unified:
        model = SpeechLLMForConditionalGeneration.from_pretrained(folder)
        for constrained in (False, True):
            model.config.constrain_to_script = constrained
            tag = f"{folder.name}{'_constrained' if constrained else ''}"
            results[f"unified:{tag}"] = cer(train_speech_llm.transcribe(model, held))
            results[f"unified_seen:{tag}"] = cer(train_speech_llm.transcribe(model, seen))
            print(tag, results[f"unified:{tag}"], results[f"unified_seen:{tag}"], flush=True)
    results["seconds"] = round(time.time() - start, 1)
    print(json.dumps(results, indent=1, ensure_ascii=False))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
