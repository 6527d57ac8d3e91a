"""Pruned against exact TDT loss on dev, over seeds: the seed-mean CER of each, and their difference (pruned - exact)
with a 95 % interval from the hierarchical bootstrap (seeds and utterances), from pruned_dev.sh's predictions; or any
two run names of pruned_dev.sh / variant_dev.sh (--system, --control).

    python docs/experiments/speed/compare_pruned.py [--exp runs/pruned] [--prune 5] [--system NAME --control NAME]
"""
import argparse
import json
import re
from pathlib import Path

from avalign.training.evaluation.metrics import hierarchical_bootstrap

parser = argparse.ArgumentParser()
parser.add_argument("--exp", type=Path, default=Path("runs/pruned"))
parser.add_argument("--prune", type=int, default=5)
parser.add_argument("--system", help="the runs' name before -fFRACTION-sSEED (default pruned{prune})")
parser.add_argument("--control", default="exact")
args = parser.parse_args()
system, control = args.system or f"pruned{args.prune}", args.control


def predictions(name, split, decoding):
    path = args.exp / "runs" / f"ft_{name}" / "eval" / f"predictions-m-{split}-{decoding}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


runs = {}  # fraction -> seeds with both systems
for folder in sorted((args.exp / "runs").glob(f"ft_{control}-f*-s*")):
    fraction, seed = re.match(rf"ft_{control}-f([\d.]+)-s(\d+)", folder.name).groups()
    if (args.exp / "runs" / f"ft_{system}-f{fraction}-s{seed}" / "eval" / "results.json").is_file():
        runs.setdefault(fraction, []).append(seed)
print(f"| fraction | seeds | split | decoding | {control} | {system} | {system} - {control} [95 % interval] |")
print("|---|---|---|---|---:|---:|---|")
for fraction, seeds in runs.items():
    for split in ("dev", "dev_ood"):
        for decoding in ("tdt", "ctc"):
            exact = [predictions(f"{control}-f{fraction}-s{s}", split, decoding) for s in seeds]
            pruned = [predictions(f"{system}-f{fraction}-s{s}", split, decoding) for s in seeds]
            r = hierarchical_bootstrap(pruned, exact)
            print(f"| {fraction} | {','.join(seeds)} | {split} | {decoding} | {100 * r['b']:.1f} | {100 * r['a']:.1f} "
                  f"| {100 * r['difference']:+.1f} [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] |")
