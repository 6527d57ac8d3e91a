"""TDT loss forward+backward on CPU: avalign's tdt_loss vs transformers' tdt_loss, side by side in one run.

Joint logits are given (random, seeded): B=8, T=150, U=40, V=1024+blank, durations 0..4, "mean" reduction.
Reports the median wall (and CPU) time of forward+backward after a warm-up, the extra peak memory of each loss
(beyond its inputs and their gradients, measured in fresh subprocesses), and how far the losses and gradients agree.

    python benchmarks/bench_tdt_loss.py [--threads 2] [--repeats 5]
"""

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

from avalign.modeling.tdt_loss import tdt_loss


BATCH, FRAMES, LABELS, VOCAB, DURATIONS = 8, 150, 40, 1025, [0, 1, 2, 3, 4]
BLANK = VOCAB - 1
LOSSES = {"avalign": tdt_loss, "transformers": transformers_tdt_loss}
TARGETS = {"speedup": 8.0, "memory_ratio": 0.25, "loss_rel_diff": 1e-4, "grad_abs_diff": 1e-3}


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


def main(repeats=5, warmup=1, threads=2):
    set_threads(threads)
    started_on = machine()
    inputs = make_inputs()
    runs = {name: (lambda f=f: forward_backward(f, *inputs)) for name, f in LOSSES.items()}
    times = interleaved_times(runs, repeats, warmup)
    memory = {name: measure_in_subprocess(__file__, name, threads) for name in LOSSES}
    results = {
        "shape": dict(batch=BATCH, frames=FRAMES, labels=LABELS, vocab=VOCAB, durations=DURATIONS),
        "threads": threads,
        "machine": started_on,
        "repeats": repeats,
        "times": times,
        "extra_peak_bytes": memory,
        "memory_method": MEMORY_METHOD,
        "agreement": agreement(inputs),
    }
    results["speedup"] = times["transformers"]["wall_s"] / times["avalign"]["wall_s"]
    results["memory_ratio"] = memory["avalign"] / memory["transformers"]
    check = results["agreement"]
    results["meets_targets"] = {
        "speedup": results["speedup"] >= TARGETS["speedup"],
        "memory_ratio": results["memory_ratio"] <= TARGETS["memory_ratio"],
        "loss_rel_diff": check["loss_rel_diff"] <= TARGETS["loss_rel_diff"],
        "grad_abs_diff": max(check["token_grad_abs_diff"], check["duration_grad_abs_diff"])
        <= TARGETS["grad_abs_diff"],
    }
    return results


def print_results(results):
    shape = results["shape"]
    print_contenders(
        f"TDT loss forward+backward, CPU, {results['threads']} threads, B={shape['batch']} T={shape['frames']} "
        f"U={shape['labels']} V={shape['vocab']} durations={shape['durations']}, median of {results['repeats']}",
        results,
    )
    check = results["agreement"]
    print(f"\nspeedup {results['speedup']:.1f}x (target >= {TARGETS['speedup']:.0f}x); extra peak memory ratio "
          f"{results['memory_ratio']:.3f} (target <= {TARGETS['memory_ratio']})")
    print(f"loss {check['loss']:.6f}: relative difference {check['loss_rel_diff']:.2e}; largest gradient differences: "
          f"token {check['token_grad_abs_diff']:.2e} (largest token gradient {check['token_grad_abs_max']:.2e}), "
          f"duration {check['duration_grad_abs_diff']:.2e}")
    print(f"targets met: {results['meets_targets']}")
    print(f"memory: {results['memory_method']}")


if __name__ == "__main__":
    command_line(__doc__.splitlines()[0], LOSSES, main, memory_child, print_results, repeats=5)
