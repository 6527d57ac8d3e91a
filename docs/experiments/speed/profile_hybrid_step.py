"""Profile the demo's stage-3 hybrid step (bench_train_step's model and batch): where the TDT half's time goes.

    python docs/experiments/speed/profile_hybrid_step.py [--ctc_weight 0.5] [--rows 25]
"""
import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from bench_train_step import build_step, demo_batch  # noqa: E402
from avalign.training.precision import choose_precision  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--ctc_weight", type=float, default=0.5)
parser.add_argument("--rows", type=int, default=25)
args = parser.parse_args()
torch.set_num_threads(2)
print(open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0], torch.backends.cpu.get_cpu_capability())
precision = choose_precision("auto", device="cpu").precision
step = build_step(args.ctc_weight, demo_batch(8, 3.75), precision)
for _ in range(3):
    step()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(5):
        step()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
