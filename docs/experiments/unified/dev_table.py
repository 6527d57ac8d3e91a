"""Issue 20: unified-model variants on dev, one row each, from the `dev_eval.py` JSONs copied to dev/ (named
<run name>-stopNN.json): seen-language CER (en / hi / ta), Bengali held to the script, distinct Bengali outputs (27
references), and the means over each group's rows (seeds and encoders). An argument is a JSON's stem, or GROUP:stem
(the group: the stem's name without seed, encoder and stop).

    python docs/experiments/unified/dev_table.py recipe:evalfix-aligned-stop38 recipe:s1-fix-aligned-stop38 latin-s0-aligned-stop39
"""

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

DEV = Path(__file__).parent / "dev"


def row(stem: str) -> tuple[float, dict, float, int]:
    name = re.sub(r"-stop\d+$", "", stem)
    record = json.loads((DEV / f"{stem}.json").read_text())
    seen, held = record[f"unified_seen:{name}"], record[f"unified:{name}_constrained"]
    return seen["cer"], seen["per_language"], held["cer"], held["distinct"]


def group(stem: str) -> str:  # latin-s0-aligned-stop39 -> latin
    return re.sub(r"-s\d+-.*|-(aligned|baseline).*", "", stem)


means = defaultdict(list)
print("| run | seen dev (en / hi / ta) | Bengali dev held | distinct |")
print("|---|---:|---:|---:|")
for argument in sys.argv[1:]:
    name, _, stem = argument.rpartition(":")
    seen, languages, held, distinct = row(stem)
    means[name or group(stem)].append((seen, held))
    print(f"| {stem} | {seen} ({' / '.join(str(languages[code]) for code in ('en', 'hi', 'ta'))}) | {held} | {distinct} |")
for name, values in means.items():
    print(f"mean of {name} ({len(values)} runs): seen {sum(s for s, _ in values) / len(values):.2f}, "
          f"Bengali held {sum(h for _, h in values) / len(values):.2f}")
