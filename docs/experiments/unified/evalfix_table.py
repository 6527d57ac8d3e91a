"""Issue 20, thirteenth pass: the unified models trained on encoder outputs cached with the romanizer's dropout on
(the pipeline until the eval-mode fix; `--cache_with_dropout true`) against outputs cached in eval mode, two seeds,
both encoders, on dev (`dev_eval.py` JSONs in dev/): seen-language CER (en / hi / ta), Bengali held to the script,
distinct Bengali outputs (27 references).

    python docs/experiments/unified/evalfix_table.py
"""

import json
from pathlib import Path

DEV = Path(__file__).parent / "dev"
RUNS = {  # (encoder, seed, cache) -> (JSON, the model's name in it)
    ("aligned", 0, "dropout"): ("control-aligned-dev-stop38", "zeroshot-bn-aligned"),
    ("aligned", 0, "eval mode"): ("evalfix-aligned-stop38", "evalfix-aligned"),
    ("baseline", 0, "dropout"): ("control-baseline-dev-stop38", "zeroshot-bn-baseline"),
    ("baseline", 0, "eval mode"): ("evalfix-baseline-stop38", "evalfix-baseline"),
    **{(encoder, 1, cache): (f"s1-{short}-{encoder}-stop38", f"s1-{short}-{encoder}")
       for encoder in ("aligned", "baseline") for cache, short in (("dropout", "drop"), ("eval mode", "fix"))},
}  # fmt: skip

print("| encoder | seed | cached outputs | seen dev (en / hi / ta) | Bengali dev held | distinct |")
print("|---|---|---|---:|---:|---:|")
for (encoder, seed, cache), (file, name) in sorted(RUNS.items()):
    record = json.loads((DEV / f"{file}.json").read_text())
    seen, held = record[f"unified_seen:{name}"], record[f"unified:{name}_constrained"]
    languages = " / ".join(str(seen["per_language"][language]) for language in ("en", "hi", "ta"))
    print(f"| {encoder} | {seed} | {cache} | {seen['cer']} ({languages}) | {held['cer']} | {held['distinct']} |")
