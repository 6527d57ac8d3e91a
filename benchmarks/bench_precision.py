"""`mixed_precision: auto` against fp32 and bf16: stage-1 and stage-3 training steps on this CPU, as it is and forced
down to AVX2 (issue 18).

Each CPU kind runs in its own subprocess, because the kernels are chosen when torch loads: `native` is the machine as
it is; `avx2` sets ONEDNN_MAX_CPU_ISA=AVX2 and ATEN_CPU_CAPABILITY=avx2, which turns oneDNN's AMX / AVX512_BF16
kernels and ATen's AVX512 ones off (the one-thread (512, 1024) @ (1024, 1024) product printed with each kind shows
whether bf16 then falls off its cliff). A step is forward, backward and AdamW on a demo-sized batch (ten 3-s clips:
30 s of audio, as the demo configs' max_seconds_per_batch), under the autocast that accelerate applies for that
precision. The text LM's step (the demo's `TextLMConfig`, 32 texts of 48 tokens) is measured alike, auto with the
attention `use_fast_attention` picks for it, fp32 and bf16 with the one transformers loads (sdpa). In the stage steps
auto *is* the step of the precision it chose, so that step is timed once and read for both. The goals: auto within
1.3x of fp32 wherever bf16 is not native, and never slower than explicit bf16.

    python benchmarks/bench_precision.py [--quick]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

KINDS = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
TARGET_WITHIN_FP32 = 1 / 1.3  # auto's step may take at most 1.3x fp32's
CLIPS, CLIP_FRAMES, LABELS, VOCAB = 10, 300, 30, 450
LM_VOCAB, LM_BATCH = 1272, (32, 48)  # the demo text LM's vocabulary; texts x tokens of a batch


def matmul_seconds() -> dict:
    """One thread, (512, 1024) @ (1024, 1024): fp32, bf16 tensors, and fp32 under bf16 autocast (the issue's probe)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(512, 1024), torch.randn(1024, 1024)

    def best(function) -> float:
        function()
        times = []
        for _ in range(3):
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
        return min(times)

    def autocast():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return a @ b

    figures = {"fp32": best(lambda: a @ b), "bf16": best(lambda: a.bfloat16() @ b.bfloat16()), "autocast": best(autocast)}
    torch.set_num_threads(threads)
    return figures


def stage_models():
    """The demo's stage-1 and stage-3 models (random weights: the step time does not depend on them)."""
    from avalign.modeling import (
        FastConformerConfig,
        FastConformerCTCTDTConfig,
        FastConformerForCTCTDT,
        FastConformerForMaskedTokenPrediction,
        FastConformerMaskedTokenPredictionConfig,
    )

    torch.manual_seed(0)
    encoder = FastConformerConfig.from_preset("demo").to_dict()
    stage1 = FastConformerForMaskedTokenPrediction(FastConformerMaskedTokenPredictionConfig(
        encoder_config=encoder, codebook_size=128, mask_probability=0.05, mask_block_size=8))  # fmt: skip
    stage3 = FastConformerForCTCTDT(FastConformerCTCTDTConfig(
        encoder_config=encoder, vocab_size=VOCAB, decoder_hidden_size=160, ctc_loss_weight=0.5))  # fmt: skip
    labels = torch.randint(0, VOCAB - 1, (CLIPS, LABELS), generator=torch.Generator().manual_seed(0))
    return {"stage 1": (stage1.train(), {}), "stage 3": (stage3.train(), {"labels": labels})}


def text_lm_step_function(precision: str, choice=None):
    """A training step of the demo's text LM (random weights) at `precision`; with `choice`, at its precision and the
    attention `use_fast_attention` sets for it."""
    from avalign.training.precision import use_fast_attention
    from avalign.training.text_lm import TextLMConfig, new_text_lm

    torch.manual_seed(0)
    model = new_text_lm(TextLMConfig(), LM_VOCAB).train()
    if choice is not None:
        use_fast_attention(model, choice)
    ids = torch.randint(3, LM_VOCAB, LM_BATCH, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    enabled = (choice.precision if choice is not None else precision) == "bf16"

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step.attention = model.config._attn_implementation
    return step


def step_function(model, inputs: dict, precision: str):
    features = torch.randn(CLIPS, CLIP_FRAMES, 80, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(CLIPS, CLIP_FRAMES, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext

    def step():
        with autocast():
            loss = model(features, attention_mask=mask, **inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def measure_this_kind(repeats: int, threads: int) -> dict:
    """In the subprocess of one CPU kind: the probe, auto's choice, and the step times of each precision."""
    from bench_encoder import timed

    from avalign.training.precision import choose_precision, cpu_model

    torch.set_num_threads(threads)
    choice = choose_precision("auto", "cpu")
    steps, failures = {}, {}
    for stage, (model, inputs) in stage_models().items():
        functions = {precision: step_function(model, inputs, precision) for precision in ("fp32", "bf16")}
        for name, function in list(functions.items()):  # a precision the kernels cannot run at all is reported
            try:
                function()
            except RuntimeError as error:
                failures[f"{stage} {name}"] = str(error).splitlines()[0]
                del functions[name]
        steps[stage] = timed(functions, repeats)
        if choice.precision in steps[stage]:  # auto's step is the step of the precision it chose, timed once: two
            steps[stage]["auto"] = steps[stage][choice.precision]  # timings of one step read 0.92-1.19x in one process
    lm_steps = {"fp32": text_lm_step_function("fp32"), "bf16": text_lm_step_function("bf16"),
                "auto": text_lm_step_function("auto", choice)}  # fmt: skip
    steps["text LM"] = timed(lm_steps, repeats)
    return {"cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "auto": choice.to_dict(), "matmul_seconds": matmul_seconds(), "step_seconds": steps,
            "text_lm_attention": {name: function.attention for name, function in lm_steps.items()},
            "failures": failures}  # fmt: skip


def goals(kind: str, record: dict) -> list[dict]:
    rows = []
    for stage, times in record["step_seconds"].items():
        for reference, target in (("fp32", TARGET_WITHIN_FP32), ("bf16", 1.0)):
            if reference not in times or "auto" not in times:
                continue  # it failed to run (record["failures"] says why)
            ratio = times[reference]["wall_s"] / times["auto"]["wall_s"]
            same = " (the same step)" if times["auto"] == times[reference] else ""  # one timing, read twice
            rows.append(dict(
                goal=f"{stage} step, auto ({record['auto']['precision']}) vs {reference}{same}, {kind} CPU "
                     f"({record['cpu_capability']})",
                avalign=times["auto"]["wall_s"], peer=times[reference]["wall_s"], unit="s", ratio=ratio,
                cpu_ratio=times[reference]["cpu_s"] / times["auto"]["cpu_s"], target=f">= {target:.3g}x",
                met=ratio >= target * 0.95,  # 5 %: two timings of the same precision
            ))  # fmt: skip
    return rows


def main(quick: bool = False, threads: int = 2) -> dict:
    repeats = 2 if quick else 4
    results = {"name": "precision", "device": "cpu", "threads": threads, "goals": [], "checks": {},
               "settings": dict(batch=f"{CLIPS} x {CLIP_FRAMES} frames (30 s of audio)", repeats=repeats,
                                kinds={kind: env for kind, env in KINDS.items()})}  # fmt: skip
    for kind, env in KINDS.items():
        command = [sys.executable, __file__, "--child", "--repeats", str(repeats), "--threads", str(threads)]
        completed = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True,
                                   cwd=Path(__file__).parent, check=True)  # fmt: skip
        record = json.loads(completed.stdout.strip().splitlines()[-1])
        results["checks"][kind] = {key: record[key] for key in ("cpu_model", "cpu_capability", "matmul_seconds",
                                                                 "step_seconds", "text_lm_attention", "failures")} | {
            "auto": f"{record['auto']['precision']} ({record['auto']['reason']})"}  # fmt: skip
        results["goals"] += goals(kind, record)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(measure_this_kind(arguments.repeats, arguments.threads)))
    else:
        from bench_encoder import print_results

        print_results(main(quick=arguments.quick, threads=arguments.threads))
