"""The demo's stage-3 training step on CPU: the hybrid CTC + TDT loss against the same step with CTC only, side by side
in one run; the hybrid step with the exact TDT loss and with the pruned one (`tdt_prune_range`), and on avalign's
PyTorch TDT path (no compiled kernels) for the change they make. The goal row is the step the demo recipe trains
(training/configs/asr_demo.yaml: pruned where it sets tdt_prune_range).

The model is the demo's stage-3 model (the "demo" encoder preset, 4x subsampling, vocabulary 450, a 160-wide
prediction network, CTC weight 0.5, the fused joint), in the precision `mixed_precision: auto` picks on this machine.
A batch is the demo's largest: 30 s of audio, 8 utterances of 3.75 s with 45 labels each (random log-mels and labels:
the step's cost depends on the shapes, not the content). A step is forward, backward and the AdamW update.

The goal pair (the demo's step and the CTC-only one) runs alone, interleaved, in PROCESSES fresh interpreters: one
process can favour either step by several per cent, so the goal reads the median over processes and the checks give
every process's ratio. The other contenders run together in this process, for the rows without a target.

    python benchmarks/bench_train_step.py [--quick] [--threads 2]
"""

import argparse
import contextlib
import json
import statistics
from pathlib import Path

import torch
import yaml

from avalign.modeling import FastConformerConfig, FastConformerCTCTDTConfig, FastConformerForCTCTDT
from avalign.training.precision import choose_precision

from bench_encoder import padded_features, print_results
from bench_tdt_loss import goal_row, pytorch_path
from _measure import interleaved_times, machine, median_times, times_across_processes

TARGET_HYBRID_OVER_CTC = 1.15  # the hybrid step at most 1.15x the CTC-only one
VOCAB_SIZE, DECODER_HIDDEN_SIZE, LABELS = 450, 160, 45
DEMO_RECIPE = yaml.safe_load((Path(__file__).parents[1] / "training" / "configs" / "asr_demo.yaml").read_text())
DEMO_STAGE3_STEPS = DEMO_RECIPE["max_steps"]  # per stage-3 run
PRUNE_RANGE = DEMO_RECIPE.get("tdt_prune_range") or 5  # the pruned step's width: the demo's, else 5 (k2's default)
DEMO_STEP = "hybrid_pruned" if DEMO_RECIPE.get("tdt_prune_range") else "hybrid"
PROCESSES, PROCESS_REPEATS = 5, 8  # the goal pair's fresh interpreters, and rounds in each
STEPS = {  # contender -> build_step's arguments besides the batch and precision
    "hybrid": dict(ctc_loss_weight=0.5),
    "hybrid_pruned": dict(ctc_loss_weight=0.5, prune_range=PRUNE_RANGE),
    "ctc_only": dict(ctc_loss_weight=1.0),
    "hybrid_pytorch_tdt": dict(ctc_loss_weight=0.5, compiled=False),
}


def build_step(ctc_loss_weight: float, batch: dict, precision: str, compiled: bool = True, seed: int = 0,
               prune_range: int | None = None):
    """A zero-argument training step of a fresh demo stage-3 model."""
    torch.manual_seed(seed)
    encoder = FastConformerConfig.from_preset("demo")
    config = FastConformerCTCTDTConfig(encoder_config=encoder.to_dict(), vocab_size=VOCAB_SIZE,
                                       decoder_hidden_size=DECODER_HIDDEN_SIZE, ctc_loss_weight=ctc_loss_weight,
                                       tdt_prune_range=prune_range)
    model = FastConformerForCTCTDT(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step():
        with contextlib.nullcontext() if compiled else pytorch_path():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(batch["input_features"], batch["attention_mask"], labels=batch["labels"]).loss
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def demo_batch(batch_size: int, seconds: float) -> dict:
    features, mask, _ = padded_features(batch_size, seconds, seconds)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, VOCAB_SIZE - 1, (batch_size, LABELS), generator=generator)  # blank = VOCAB_SIZE - 1
    return dict(input_features=features, attention_mask=mask, labels=labels)


def batch_shape(quick: bool) -> tuple[int, float]:
    return (2, 2.0) if quick else (8, 3.75)


def contender_times(names: list[str], quick: bool, repeats: int) -> dict:
    """interleaved_times of fresh steps of the named contenders, in this process."""
    precision = choose_precision("auto", device="cpu").precision
    batch = demo_batch(*batch_shape(quick))
    return interleaved_times({name: build_step(batch=batch, precision=precision, **STEPS[name]) for name in names},
                             repeats, warmup=1)


def main(quick: bool = False, threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    started_on = machine()
    precision = choose_precision("auto", device="cpu")
    (batch_size, seconds), repeats = batch_shape(quick), 2 if quick else 5
    processes, process_repeats = (1, 2) if quick else (PROCESSES, PROCESS_REPEATS)
    goal_pair = times_across_processes(__file__, [DEMO_STEP, "ctc_only"], processes, process_repeats, threads,
                                       ["--quick"] if quick else [])
    per_process = [demo["wall_s"] / ctc["wall_s"] for demo, ctc in zip(goal_pair[DEMO_STEP], goal_pair["ctc_only"])]
    goal_times = {name: median_times(times) for name, times in goal_pair.items()}
    times = contender_times(list(STEPS), quick, repeats)
    saved = times["hybrid"]["wall_s"] - times["hybrid_pruned"]["wall_s"]
    demo_loss = f"pruned TDT loss, {PRUNE_RANGE} states a frame" if DEMO_STEP == "hybrid_pruned" else "exact TDT loss"
    return {
        "name": "train_step", "device": "cpu", "threads": threads,
        "settings": dict(batch_size=batch_size, utterance_seconds=seconds, labels=LABELS, vocab_size=VOCAB_SIZE,
                         precision=precision.precision, precision_reason=precision.reason,
                         prune_range=PRUNE_RANGE, demo_recipe_step=DEMO_STEP,
                         cpu_capability=torch.backends.cpu.get_cpu_capability(), repeats=repeats,
                         goal_processes=processes, goal_repeats_per_process=process_repeats, machine=started_on),
        "checks": dict(
            hybrid_over_ctc_only=goal_times[DEMO_STEP]["wall_s"] / goal_times["ctc_only"]["wall_s"],
            hybrid_over_ctc_only_per_process=[round(ratio, 3) for ratio in per_process],
            hybrid_over_ctc_only_median_of_processes=statistics.median(per_process),
            hybrid_over_ctc_only_in_one_process_with_the_rest=times[DEMO_STEP]["wall_s"] / times["ctc_only"]["wall_s"],
            exact_hybrid_over_ctc_only=times["hybrid"]["wall_s"] / times["ctc_only"]["wall_s"],
            seconds_saved_per_step_by_pruning=saved,
            demo_stage3_minutes_saved_per_run_by_pruning=saved * DEMO_STAGE3_STEPS / 60,
        ),
        "times": times,
        "goal_times": goal_times,
        "goals": [
            goal_row(f"stage-3 step (demo, 30 s batch), hybrid CTC+TDT as the demo trains it ({demo_loss}) vs CTC only "
                     f"(median of {processes} processes)", goal_times[DEMO_STEP], goal_times["ctc_only"], "s",
                     1 / TARGET_HYBRID_OVER_CTC,
                     f"<= {TARGET_HYBRID_OVER_CTC:g}x CTC only (>= {1 / TARGET_HYBRID_OVER_CTC:.3g}x)"),
            goal_row("stage-3 step (demo, 30 s batch), hybrid with the exact TDT loss vs CTC only", times["hybrid"],
                     times["ctc_only"], "s"),
            goal_row(f"stage-3 step (demo, 30 s batch), hybrid, pruned TDT loss ({PRUNE_RANGE} states a frame) vs the "
                     "exact one", times["hybrid_pruned"], times["hybrid"], "s"),
            goal_row("stage-3 step (demo, 30 s batch), hybrid, compiled TDT kernels vs the PyTorch TDT path",
                     times["hybrid"], times["hybrid_pytorch_tdt"], "s"),
        ],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small batch, fewer repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--interleave", nargs="+", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=PROCESS_REPEATS, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.interleave:  # a fresh interpreter of times_across_processes: one JSON line
        torch.set_num_threads(arguments.threads)
        print(json.dumps(contender_times(arguments.interleave, arguments.quick, arguments.repeats)))
    else:
        results = main(quick=arguments.quick, threads=arguments.threads)
        print_results(results)
        print(f"  times: {results['times']}")
