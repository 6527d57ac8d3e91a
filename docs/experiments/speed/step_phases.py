"""The demo's stage-3 step split into forward, backward and AdamW, the hybrid (as the demo trains it) against CTC only,
interleaved in one process; with --transducer, the forward's TDT parts timed in place (prediction network, windows,
fused loss). Run it several times: one process can favour either step by several per cent.

    python docs/experiments/speed/step_phases.py [--rounds 20] [--transducer]
"""
import argparse
import functools
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from bench_train_step import DEMO_STEP, STEPS, demo_batch  # noqa: E402
from avalign.modeling import FastConformerCTCTDTConfig, FastConformerConfig, FastConformerForCTCTDT  # noqa: E402
from avalign.modeling import modeling_fastconformer  # noqa: E402
from bench_train_step import DECODER_HIDDEN_SIZE, VOCAB_SIZE  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default=20)
parser.add_argument("--transducer", action="store_true")
args = parser.parse_args()
torch.set_num_threads(2)
print(open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(" \t:"), torch.backends.cpu.get_cpu_capability())
parts = defaultdict(list)


def timed(name, function):
    @functools.wraps(function)
    def run(*arguments, **keywords):
        started = time.perf_counter()
        result = function(*arguments, **keywords)
        parts[name].append(time.perf_counter() - started)
        return result
    return run


if args.transducer:
    for name in ("lattice_windows", "fused_joint_tdt_loss"):
        setattr(modeling_fastconformer, name, timed(name, getattr(modeling_fastconformer, name)))
    model_class = modeling_fastconformer.FastConformerForCTCTDT
    for name in ("prediction_network", "transducer_loss"):
        setattr(model_class, name, timed(name, getattr(model_class, name)))
batch = demo_batch(8, 3.75)


def build(ctc_loss_weight, prune_range=None, **_):
    torch.manual_seed(0)
    config = FastConformerCTCTDTConfig(encoder_config=FastConformerConfig.from_preset("demo").to_dict(),
                                       vocab_size=VOCAB_SIZE, decoder_hidden_size=DECODER_HIDDEN_SIZE,
                                       ctc_loss_weight=ctc_loss_weight, tdt_prune_range=prune_range)
    model = FastConformerForCTCTDT(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step():  # -> forward, backward, optimizer seconds
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(batch["input_features"], batch["attention_mask"], labels=batch["labels"]).loss
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return forward - started, backward - forward, time.perf_counter() - backward

    return step


steps = {name: build(**STEPS[name]) for name in (DEMO_STEP, "ctc_only")}
phases = {name: [] for name in steps}
for round_index in range(args.rounds + 2):
    for name, step in steps.items():
        result = step()
        if round_index >= 2:
            phases[name].append(result)
for name, rows in phases.items():
    medians = [1000 * statistics.median(column) for column in zip(*rows)]
    print(f"{name}: forward {medians[0]:.1f}, backward {medians[1]:.1f}, AdamW {medians[2]:.1f} ms (medians)")
totals = {name: statistics.median(sum(row) for row in rows) for name, rows in phases.items()}
print(f"{DEMO_STEP} / ctc_only: {totals[DEMO_STEP] / totals['ctc_only']:.3f}")
for name, seconds in parts.items():
    print(f"  in place: {name} {1000 * statistics.median(seconds[2:]):.2f} ms")
