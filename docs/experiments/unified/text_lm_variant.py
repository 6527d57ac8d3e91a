"""Issue 20: does the text-only LM read its prompt? Trains a text LM variant on the pipeline's texts
(`pipeline.text_lm_texts`) and scores the LM cascade on the dev sentences' *true* romanizations, per language: a
de-romanizer that reads its input is near 0 there; one that writes its prior is not. The run's own LM is scored with
--steps 0.

    OMP_NUM_THREADS=1 .venv/bin/python docs/experiments/unified/text_lm_variant.py --steps 4000 --out runs/lm-exp/s4000

The texts include `reading_drills` unless --no-drills (sentences only, the recipe before stop 30).
"""

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import jiwer
import torch
from datasets import load_from_disk

from avalign.training import text_lm
from avalign.training.pipeline import PRESETS, text_lm_texts
from avalign.training.roman import deromanize


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--intermediate", type=int, default=None, help="the MLP width (default: the preset's)")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drills", action=argparse.BooleanOptionalAction, default=True,
                        help="the texts with reading drills (--no-drills: sentences only, the recipe before stop 30)")
    parser.add_argument("--latin", action=argparse.BooleanOptionalAction, default=True,
                        help="English in the prompt form too, as copies (--no-latin: the recipe before stop 39)")
    parser.add_argument("--sentences", type=int, default=40, help="dev sentences per language")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cache, languages = args.run / "romanization.json", PRESETS["demo"].languages
    results = {"cpu": platform.processor() or platform.machine(), "capability": torch.backends.cpu.get_cpu_capability()}
    if args.steps:
        config = PRESETS["demo"].text_lm_config
        config = replace(config, **{k: v for k, v in {"hidden_size": args.hidden, "num_layers": args.layers,
                                           "intermediate_size": args.intermediate}.items() if v})
        texts = text_lm_texts(args.run / "corpus", cache, languages, args.drills, args.latin)
        results["train"] = text_lm.train_text_lm(texts,
                                                 args.out, steps=args.steps, config=config, seed=args.seed,
                                                 learning_rate=args.learning_rate, batch_size=args.batch_size)
    lm = args.out if args.steps else args.run / "text_lm"
    dev = load_from_disk(str(args.run / "corpus"))
    pairs = deromanize.corpus_pairs(dev, cache, splits=["dev"])
    start = time.time()
    for constrained in (False, True):
        deromanizer = deromanize.load_deromanizer(f"lm:{lm}", constrain_to_script=constrained)
        for language in ("hi", "bn", "ta"):
            everything = [(roman, native) for code, roman, native in pairs if code == language]
            # the first --sentences (the figure of the earlier passes), and each distinct dev sentence once
            for suffix, items in (("", everything[: args.sentences]), ("_distinct", list(dict.fromkeys(everything)))):
                hypotheses = deromanizer.deromanize([roman for roman, _ in items], [language] * len(items))
                key = f"{language}{'_constrained' if constrained else ''}{suffix}"
                results[key] = round(100 * jiwer.cer([native for _, native in items], hypotheses), 1)
                print(key, len(items), results[key], hypotheses[0], "|", items[0][1], flush=True)
    results["eval_seconds"] = round(time.time() - start, 1)
    print(json.dumps({k: v for k, v in results.items() if k != "train"} | {"train_seconds": results.get("train", {}).get("seconds")}))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reads_prompt.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
