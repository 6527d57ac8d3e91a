"""TDT joint + loss forward+backward on CPU: the fused joint+loss vs the joint output materialised, side by side.

The joint is transformers' own ParakeetTDTJointNetwork (head(relu(enc + dec))), B=8, T=150, U=40, H=640,
V=1024+blank, durations 0..4, "mean" reduction. Contenders:
  fused         avalign fused_joint_tdt_loss: the (B, T, U+1, V+D) joint output is never materialised
  unfused       joint materialised, then avalign tdt_loss
  transformers  joint materialised, then transformers' tdt_loss (what ParakeetForTDT does)
Reports median times, the extra peak memory beyond inputs and their gradients (fresh subprocesses), and how far the
fused loss and gradients agree with the unfused ones.

    python benchmarks/bench_fused_joint.py [--threads 2] [--repeats 3]
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
from transformers import ParakeetTDTConfig
from transformers.loss.loss_tdt import tdt_loss as transformers_tdt_loss
from transformers.models.parakeet.modeling_parakeet import ParakeetTDTJointNetwork

from avalign.modeling.tdt_loss import fused_joint_tdt_loss, tdt_loss


BATCH, FRAMES, LABELS, HIDDEN, VOCAB, DURATIONS = 8, 150, 40, 640, 1025, [0, 1, 2, 3, 4]
BLANK = VOCAB - 1
TARGETS = {"memory_ratio": 1 / 3, "loss_rel_diff": 1e-5, "grad_rel_diff": 1e-4}


def make_inputs(seed=0):
    """Projected encoder (B, T, H) and decoder (B, U+1, H) states, the stock TDT joint, the alignment arguments."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    config = ParakeetTDTConfig(vocab_size=VOCAB, decoder_hidden_size=HIDDEN, durations=DURATIONS, blank_token_id=BLANK)
    joint = ParakeetTDTJointNetwork(config)
    encoder_states = torch.randn(BATCH, FRAMES, HIDDEN, generator=generator).requires_grad_()
    decoder_states = torch.randn(BATCH, LABELS + 1, HIDDEN, generator=generator).requires_grad_()
    alignment = dict(
        targets=torch.randint(0, BLANK, (BATCH, LABELS), generator=generator),
        logit_lengths=torch.full((BATCH,), FRAMES),
        target_lengths=torch.full((BATCH,), LABELS),
        blank_token_id=BLANK,
        durations=DURATIONS,
    )
    return encoder_states, decoder_states, joint, alignment


def fused(encoder_states, decoder_states, joint, alignment):
    return fused_joint_tdt_loss(encoder_states, decoder_states, joint.head, joint.activation, **alignment)


def materialised(loss_function):
    def joint_then_loss(encoder_states, decoder_states, joint, alignment):
        logits = joint(decoder_hidden_states=decoder_states[:, None], encoder_hidden_states=encoder_states[:, :, None])
        return loss_function(logits[..., :VOCAB], logits[..., VOCAB:], **alignment)  # logits (B, T, U+1, V+D)

    return joint_then_loss


CONTENDERS = {"fused": fused, "unfused": materialised(tdt_loss), "transformers": materialised(transformers_tdt_loss)}


def trainable(inputs):
    encoder_states, decoder_states, joint, _ = inputs
    return [encoder_states, decoder_states, *joint.parameters()]


def forward_backward(contender, inputs):
    """One training step; returns the loss and leaves the gradients in .grad."""
    for tensor in trainable(inputs):
        tensor.grad = None
    loss = contender(*inputs)
    loss.backward()
    return loss.detach()


def agreement(inputs):
    """fused vs unfused: relative loss difference and largest gradient difference relative to the largest gradient."""
    losses, grads = {}, {}
    for name in ("fused", "unfused"):
        losses[name] = forward_backward(CONTENDERS[name], inputs)
        grads[name] = [tensor.grad.clone() for tensor in trainable(inputs)]
    grad_rel_diff = max(
        ((a - b).abs().max() / b.abs().max()).item() for a, b in zip(grads["fused"], grads["unfused"])
    )
    return {
        "loss": losses["unfused"].item(),
        "loss_rel_diff": abs((losses["fused"] - losses["unfused"]) / losses["unfused"]).item(),
        "grad_rel_diff": grad_rel_diff,
    }


def memory_child(name):
    """In a fresh subprocess: extra peak bytes of one forward+backward of contender `name`."""
    inputs = make_inputs()
    gradient_bytes = tensor_bytes(*trainable(inputs))
    return extra_peak_bytes(lambda: forward_backward(CONTENDERS[name], inputs), gradient_bytes)


def main(repeats=3, warmup=1, threads=2):
    set_threads(threads)
    started_on = machine()
    inputs = make_inputs()
    runs = {name: (lambda c=c: forward_backward(c, inputs)) for name, c in CONTENDERS.items()}
    times = interleaved_times(runs, repeats, warmup)
    memory = {name: measure_in_subprocess(__file__, name, threads) for name in CONTENDERS}
    results = {
        "shape": dict(batch=BATCH, frames=FRAMES, labels=LABELS, hidden=HIDDEN, vocab=VOCAB, durations=DURATIONS),
        "threads": threads,
        "machine": started_on,
        "repeats": repeats,
        "times": times,
        "extra_peak_bytes": memory,
        "memory_method": MEMORY_METHOD,
        "agreement": agreement(inputs),
        "memory_ratio": memory["fused"] / memory["unfused"],
        "time_ratio": times["fused"]["wall_s"] / times["unfused"]["wall_s"],
    }
    check = results["agreement"]
    results["meets_targets"] = {
        "memory_ratio": results["memory_ratio"] <= TARGETS["memory_ratio"],
        "loss_rel_diff": check["loss_rel_diff"] <= TARGETS["loss_rel_diff"],
        "grad_rel_diff": check["grad_rel_diff"] <= TARGETS["grad_rel_diff"],
    }
    return results


def print_results(results):
    shape = results["shape"]
    print_contenders(
        f"TDT joint + loss forward+backward, CPU, {results['threads']} threads, B={shape['batch']} "
        f"T={shape['frames']} U={shape['labels']} H={shape['hidden']} V={shape['vocab']} "
        f"durations={shape['durations']}, median of {results['repeats']}",
        results,
    )
    check = results["agreement"]
    print(f"\nfused / unfused: extra peak memory {results['memory_ratio']:.3f} (target <= 1/3), time "
          f"{results['time_ratio']:.2f}x")
    print(f"loss {check['loss']:.6f}: fused vs unfused relative difference {check['loss_rel_diff']:.2e}, largest "
          f"gradient difference {check['grad_rel_diff']:.2e} of the largest gradient")
    print(f"targets met: {results['meets_targets']}")
    print(f"memory: {results['memory_method']}")


if __name__ == "__main__":
    command_line(__doc__.splitlines()[0], CONTENDERS, main, memory_child, print_results, repeats=3)
