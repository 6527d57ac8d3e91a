"""TDT loss forward+backward on CPU: avalign's tdt_loss vs transformers' tdt_loss and the physical floor, in one run.

Joint logits are given (random, seeded): B=8, T=150, U=40, V=1024+blank, durations 0..4, "mean" reduction.
Reports the median wall (and CPU) time of forward+backward after a warm-up for avalign's compiled kernels, avalign's
PyTorch path (the fallback) and transformers; the floor F = 2 x one `torch.exp(logits, out=grad)` pass on a gradient
buffer already touched (an exact loss that stores no softmax exponentiates every logit twice); the kernels' build
time (in a fresh cache folder, so it is always measured, never hidden in a figure); the extra peak memory of each loss
(beyond its inputs and their gradients, measured in fresh subprocesses), and how far the losses and gradients agree.
Plain RNN-T peers of the same cost class (torchaudio, k2 / fast_rnnt, optimized_transducer) are named with why
they are not in the run.

    python benchmarks/bench_tdt_loss.py [--threads 2] [--repeats 5]
"""

import contextlib
import importlib
import os
import tempfile

import torch
from _measure import (
    MEMORY_METHOD,
    command_line,
    extra_peak_bytes,
    interleaved_times,
    machine,
    measure_in_subprocess,
    print_contenders,
    set_threads,
    tensor_bytes,
)
from transformers.loss.loss_tdt import tdt_loss as transformers_tdt_loss

from avalign.modeling import tdt_kernels
from avalign.modeling.tdt_loss import tdt_loss


BATCH, FRAMES, LABELS, VOCAB, DURATIONS = 8, 150, 40, 1025, [0, 1, 2, 3, 4]
BLANK = VOCAB - 1
LOSSES = {"avalign": tdt_loss, "transformers": transformers_tdt_loss}
TARGETS = {"speedup": 15.0, "floor_ratio": 1.5, "memory_ratio": 0.25, "loss_rel_diff": 1e-4, "grad_abs_diff": 1e-3}
RNNT_PEERS = {  # what happened when each was tried here (2026-12-02, CPU wheels of torch 2.13.0 only)
    "torchaudio.functional.rnnt_loss": "no torchaudio build for torch 2.13 (PyPI's 2.11.1 pins torch 2.11)",
    "fast_rnnt": "sdist only; its CMake build downloads pybind11 from GitHub, unreachable here",
    "k2": "no CPU wheel for this torch and Python on PyPI (1.23.4 is a py3.9 placeholder)",
    "optimized_transducer": "sdist only; its CMake build fetches its dependencies from GitHub, unreachable here",
}
tdt_loss_module = importlib.import_module("avalign.modeling.tdt_loss")


def make_inputs(seed=0):
    """Leaf logits (B, T, U+1, V) and (B, T, U+1, D) and the alignment arguments."""
    generator = torch.Generator().manual_seed(seed)
    token_logits = torch.randn(BATCH, FRAMES, LABELS + 1, VOCAB, generator=generator).requires_grad_()
    duration_logits = torch.randn(BATCH, FRAMES, LABELS + 1, len(DURATIONS), generator=generator).requires_grad_()
    alignment = dict(
        targets=torch.randint(0, BLANK, (BATCH, LABELS), generator=generator),
        logit_lengths=torch.full((BATCH,), FRAMES),
        target_lengths=torch.full((BATCH,), LABELS),
        blank_token_id=BLANK,
        durations=DURATIONS,
    )
    return token_logits, duration_logits, alignment


def forward_backward(loss_function, token_logits, duration_logits, alignment):
    """One training step of the loss; returns the loss and leaves the gradients in .grad."""
    token_logits.grad = duration_logits.grad = None
    loss = loss_function(token_logits, duration_logits, **alignment)
    loss.backward()
    return loss.detach()


@contextlib.contextmanager
def pytorch_path():
    """avalign's loss without its compiled kernels (as where no C++ compiler exists)."""
    saved = tdt_loss_module.kernels_for, tdt_loss_module.kernel_library
    tdt_loss_module.kernels_for, tdt_loss_module.kernel_library = (lambda logits: None), (lambda: None)
    try:
        yield
    finally:
        tdt_loss_module.kernels_for, tdt_loss_module.kernel_library = saved


def on_pytorch_path(*args):
    with pytorch_path():
        return forward_backward(tdt_loss, *args)


def build_kernels():
    """Build the kernels in a fresh cache folder: the first call's compilation time, always measured."""
    with tempfile.TemporaryDirectory() as folder:
        saved = os.environ.get("AVALIGN_KERNEL_CACHE")
        os.environ["AVALIGN_KERNEL_CACHE"] = folder
        tdt_kernels.kernel_library.cache_clear()
        try:
            library = tdt_kernels.kernel_library()  # loaded: it stays mapped once its file is gone
            return dict(tdt_kernels.kernel_build_info, available=library is not None)
        finally:
            os.environ.pop("AVALIGN_KERNEL_CACHE") if saved is None else os.environ.update(AVALIGN_KERNEL_CACHE=saved)


def agreement(inputs):
    """avalign vs transformers: relative loss difference and largest absolute gradient differences."""
    results = {}
    for name, loss_function in LOSSES.items():
        loss = forward_backward(loss_function, *inputs)
        results[name] = (loss, inputs[0].grad.clone(), inputs[1].grad.clone())
    (ours, *our_grads), (theirs, *their_grads) = results["avalign"], results["transformers"]
    token_diff, duration_diff = ((a - b).abs().max().item() for a, b in zip(our_grads, their_grads))
    return {
        "loss": theirs.item(),
        "loss_rel_diff": abs((ours - theirs) / theirs).item(),
        "token_grad_abs_diff": token_diff,
        "duration_grad_abs_diff": duration_diff,
        "token_grad_abs_max": their_grads[0].abs().max().item(),
    }


def memory_child(name):
    """In a fresh subprocess: extra peak bytes of one forward+backward of loss `name`."""
    inputs = make_inputs()
    gradient_bytes = tensor_bytes(*inputs[:2])
    return extra_peak_bytes(lambda: forward_backward(LOSSES[name], *inputs), gradient_bytes)


def goal_row(name, ours, peer, unit, target=None, target_text=None):
    """A row of RESULTS.md's goals table; ratio = peer / ours (> 1: avalign is ahead), `target` on that ratio."""
    ratio = peer["wall_s"] / ours["wall_s"] if unit == "s" else peer / ours
    cpu_ratio = peer["cpu_s"] / ours["cpu_s"] if unit == "s" and "cpu_s" in peer else None
    figure = (lambda t: t["wall_s"]) if unit == "s" else (lambda t: t)
    return dict(goal=name, avalign=figure(ours), peer=figure(peer), unit=unit, ratio=ratio, cpu_ratio=cpu_ratio,
                target=target_text or (None if target is None else f">= {target:g}x"),
                met=None if target is None else ratio >= target)


def main(repeats=5, warmup=1, threads=2):
    set_threads(threads)
    started_on = machine()
    build = build_kernels()
    inputs = make_inputs()
    token_logits = inputs[0].detach()
    exp_buffer = torch.exp(token_logits)  # touched once: the floor leaves page faults out
    runs = {
        "avalign": lambda: forward_backward(tdt_loss, *inputs),
        "avalign_pytorch_path": lambda: on_pytorch_path(*inputs),
        "transformers": lambda: forward_backward(transformers_tdt_loss, *inputs),
        "exp_pass": lambda: torch.exp(token_logits, out=exp_buffer),
    }
    times = interleaved_times(runs, repeats, warmup)
    floor = {key: 2 * value for key, value in times.pop("exp_pass").items()}
    memory = {name: measure_in_subprocess(__file__, name, threads) for name in LOSSES}
    results = {
        "shape": dict(batch=BATCH, frames=FRAMES, labels=LABELS, vocab=VOCAB, durations=DURATIONS),
        "threads": threads,
        "machine": dict(started_on, cpu_capability=torch.backends.cpu.get_cpu_capability()),
        "repeats": repeats,
        "kernel_build": build,
        "times": times,
        "floor_F": floor,
        "extra_peak_bytes": memory,
        "memory_method": MEMORY_METHOD,
        "agreement": agreement(inputs),
        "rnnt_peers_not_run": RNNT_PEERS,
    }
    results["speedup"] = times["transformers"]["wall_s"] / times["avalign"]["wall_s"]
    results["floor_multiple"] = times["avalign"]["wall_s"] / floor["wall_s"]
    results["memory_ratio"] = memory["avalign"] / memory["transformers"]
    check = results["agreement"]
    results["goals"] = [
        goal_row("forward+backward time, avalign vs transformers", times["avalign"], times["transformers"], "s",
                 TARGETS["speedup"]),
        goal_row("forward+backward time, avalign vs the floor F = 2 x exp pass", times["avalign"], floor, "s",
                 1 / TARGETS["floor_ratio"], f"<= {TARGETS['floor_ratio']:g} F (>= {1 / TARGETS['floor_ratio']:.3g}x)"),
        goal_row("forward+backward time, compiled kernels vs avalign's PyTorch path", times["avalign"],
                 times["avalign_pytorch_path"], "s"),
        goal_row("extra peak memory, avalign vs transformers", memory["avalign"] / 2**20,
                 memory["transformers"] / 2**20, "MiB", 1 / TARGETS["memory_ratio"],
                 f">= {1 / TARGETS['memory_ratio']:g}x (<= {TARGETS['memory_ratio']:g} of it)"),
    ]
    results["meets_targets"] = {
        "speedup": results["speedup"] >= TARGETS["speedup"],
        "floor": results["floor_multiple"] <= TARGETS["floor_ratio"],
        "memory_ratio": results["memory_ratio"] <= TARGETS["memory_ratio"],
        "loss_rel_diff": check["loss_rel_diff"] <= TARGETS["loss_rel_diff"],
        "grad_abs_diff": max(check["token_grad_abs_diff"], check["duration_grad_abs_diff"])
        <= TARGETS["grad_abs_diff"],
    }
    return results


def print_results(results):
    shape = results["shape"]
    build = results["kernel_build"]
    print(f"kernels: {'built in %.2f s' % build['compile_s'] if build['available'] else build.get('disabled')}; "
          f"CPU capability {results['machine']['cpu_capability']}")
    results = dict(results, extra_peak_bytes={"avalign_pytorch_path": float("nan"), **results["extra_peak_bytes"]})
    print_contenders(
        f"TDT loss forward+backward, CPU, {results['threads']} threads, B={shape['batch']} T={shape['frames']} "
        f"U={shape['labels']} V={shape['vocab']} durations={shape['durations']}, median of {results['repeats']}",
        results,
    )
    check = results["agreement"]
    floor = results["floor_F"]["wall_s"]
    print(f"\nfloor F = 2 x exp pass = {floor * 1e3:.1f} ms; avalign = {results['floor_multiple']:.2f} F "
          f"(target <= {TARGETS['floor_ratio']} F)")
    print(f"speedup {results['speedup']:.1f}x (target >= {TARGETS['speedup']:.0f}x); extra peak memory ratio "
          f"{results['memory_ratio']:.3f} (target <= {TARGETS['memory_ratio']})")
    print(f"loss {check['loss']:.6f}: relative difference {check['loss_rel_diff']:.2e}; largest gradient differences: "
          f"token {check['token_grad_abs_diff']:.2e} (largest token gradient {check['token_grad_abs_max']:.2e}), "
          f"duration {check['duration_grad_abs_diff']:.2e}")
    print(f"targets met: {results['meets_targets']}")
    print(f"memory: {results['memory_method']}")


if __name__ == "__main__":
    command_line(__doc__.splitlines()[0], LOSSES, main, memory_child, print_results, repeats=5)
