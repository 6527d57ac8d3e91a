"""The compiled CPU kernels of the TDT loss: agreement with the PyTorch path and float64, long targets, bfloat16,
the build cache and every fallback. (test_tdt_loss.py runs the whole loss suite on both paths as well.)"""

import shutil

import pytest
import torch
from torch import nn
from transformers.loss.loss_tdt import tdt_loss as transformers_tdt_loss

from avalign.modeling import tdt_kernels
from avalign.modeling.tdt_loss import fused_joint_tdt_loss, tdt_loss


needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")


@pytest.fixture(autouse=True)
def fresh_library():
    tdt_kernels.kernel_library.cache_clear()
    yield
    tdt_kernels.kernel_library.cache_clear()


def on_path(compiled, monkeypatch, function, *args, **kwargs):
    """function(*args, **kwargs) with the compiled kernels on or off; returns the result."""
    monkeypatch.setenv("AVALIGN_TDT_KERNELS", "1" if compiled else "0")
    tdt_kernels.kernel_library.cache_clear()
    return function(*args, **kwargs)


def loss_and_grads(token_logits, duration_logits, arguments):
    token_logits, duration_logits = (x.detach().requires_grad_() for x in (token_logits, duration_logits))
    loss = tdt_loss(token_logits, duration_logits, **arguments)
    # per-utterance losses get mixed-sign incoming gradients (the kernel's negative-scale path)
    weights = torch.tensor([1.0, -0.5, 2.0, 0.25][: loss.numel()]).reshape(loss.shape) if loss.dim() else None
    loss.backward(weights)
    return loss.detach(), token_logits.grad, duration_logits.grad


def assert_paths_agree(monkeypatch, token_logits, duration_logits, arguments):
    """The compiled and the PyTorch path give the same loss and gradients."""
    compiled = on_path(True, monkeypatch, loss_and_grads, token_logits, duration_logits, arguments)
    reference = on_path(False, monkeypatch, loss_and_grads, token_logits, duration_logits, arguments)
    for ours, theirs in zip(compiled, reference):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def padded_batch(batch, max_t, max_u, vocab, durations, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    token_logits = (torch.randn(batch, max_t, max_u + 1, vocab, generator=generator) * 3).to(dtype)
    duration_logits = torch.randn(batch, max_t, max_u + 1, len(durations), generator=generator).to(dtype)
    arguments = dict(
        targets=torch.randint(0, vocab - 1, (batch, max_u), generator=generator),
        logit_lengths=torch.randint(max(1, max_t // 2), max_t + 1, (batch,), generator=generator),
        target_lengths=torch.randint(0, max_u + 1, (batch,), generator=generator),
        blank_token_id=vocab - 1,
        durations=durations,
    )
    return token_logits, duration_logits, arguments


@needs_compiler
def test_the_kernels_build_and_serve_float32_and_bfloat16_cpu_logits():
    assert tdt_kernels.kernel_library() is not None, tdt_kernels.kernel_build_info
    assert tdt_kernels.kernels_for(torch.zeros(1, 1, 1, 3)) is not None
    assert tdt_kernels.kernels_for(torch.zeros(1, 1, 1, 3, dtype=torch.bfloat16)) is not None
    assert tdt_kernels.kernels_for(torch.zeros(1, 1, 1, 3, dtype=torch.float64)) is None  # the PyTorch path
    assert tdt_kernels.kernels_for(torch.zeros(1, 1, 3, 2).transpose(2, 3)) is None  # V not unit-stride


@needs_compiler
@pytest.mark.parametrize("durations", [[0, 1, 2, 3, 4], [1, 2], [2, 0, 1]])
@pytest.mark.parametrize("vocab", [5, 16, 37])  # below, at and past one 16-lane vector, with a tail
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compiled_path_matches_pytorch_path_on_padded_batches(monkeypatch, durations, vocab, reduction):
    token_logits, duration_logits, arguments = padded_batch(4, 9, 5, vocab, durations, seed=vocab)
    assert_paths_agree(monkeypatch, token_logits, duration_logits, dict(arguments, reduction=reduction, sigma=0.3))


@needs_compiler
def test_long_targets_agree_with_float64(monkeypatch):
    """U = 400 labels over T = 1,500 frames: float32 logits, float64 recursions, against the float64 PyTorch path
    (and against transformers' float32 recursions, where the cancellation shows)."""
    durations = [0, 1, 2, 3, 4]
    token_logits, duration_logits, arguments = padded_batch(1, 1500, 400, 6, durations, seed=3)
    arguments.update(logit_lengths=torch.tensor([1500]), target_lengths=torch.tensor([400]), reduction="sum")
    loss, token_grad, duration_grad = on_path(True, monkeypatch, loss_and_grads, token_logits, duration_logits,
                                              arguments)
    exact = on_path(False, monkeypatch, loss_and_grads, token_logits.double(), duration_logits.double(), arguments)
    assert loss.item() > 500  # a long target: the regime where float32 alpha + beta - log-likelihood cancels
    assert abs(loss.double() - exact[0]) / exact[0] < 1e-6
    token_error = (token_grad.double() - exact[1]).abs().max()
    assert token_error < 1e-5
    assert (duration_grad.double() - exact[2]).abs().max() < 1e-5
    # transformers' loss keeps its recursions in float32: there its token gradient is >= 10x further off
    theirs = token_logits.detach().requires_grad_()
    transformers_tdt_loss(theirs, duration_logits, **arguments).backward()
    assert (theirs.grad.double() - exact[1]).abs().max() > 10 * token_error


@needs_compiler
def test_rows_whose_maximum_is_far_from_the_previous_rows_take_the_exact_second_pass(monkeypatch):
    """The statistics kernel shifts each row by the previous row's max; rows 30 or 100 above or below it (and a
    frame's first row) are summed again from their own max, so the loss stays exact."""
    token_logits, duration_logits, arguments = padded_batch(2, 6, 7, 37, [0, 1, 2], seed=5)
    offsets = torch.tensor([0.0, 30.0, -30.0, 5.0, 100.0, -100.0, 7.0, 0.0])  # per u: row maxima far apart
    assert_paths_agree(monkeypatch, token_logits + offsets[:, None], duration_logits, arguments)


@needs_compiler
def test_a_released_gradient_buffer_is_reused_and_a_held_one_never_is(monkeypatch):
    tdt_kernels.gradient_buffers.release()
    token_logits, duration_logits, arguments = padded_batch(2, 64, 8, 1025, [0, 1, 2])  # 4.7 MB of logits
    first = on_path(True, monkeypatch, loss_and_grads, token_logits, duration_logits, arguments)[1]
    held = first.data_ptr()
    second = loss_and_grads(token_logits, duration_logits, arguments)[1]  # `first` is still held
    assert second.data_ptr() != held
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    del first
    reused = second.data_ptr()
    del second
    third = loss_and_grads(token_logits, duration_logits, arguments)[1]
    assert third.data_ptr() == reused  # the last gradient's storage, once released
    reference = on_path(False, monkeypatch, loss_and_grads, token_logits, duration_logits, arguments)[1]
    torch.testing.assert_close(third, reference, rtol=1e-5, atol=1e-6)
    tdt_kernels.gradient_buffers.release()


@needs_compiler
def test_bfloat16_logits_match_the_pytorch_path(monkeypatch):
    token_logits, duration_logits, arguments = padded_batch(3, 8, 4, 40, [0, 1, 2], dtype=torch.bfloat16)
    compiled = on_path(True, monkeypatch, loss_and_grads, token_logits, duration_logits, arguments)
    reference = on_path(False, monkeypatch, loss_and_grads, token_logits, duration_logits, arguments)
    assert compiled[1].dtype == torch.bfloat16
    torch.testing.assert_close(compiled[0], reference[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(compiled[1].float(), reference[1].float(), rtol=1e-2, atol=1e-4)  # ~1 bf16 ulp


@needs_compiler
def test_fused_joint_loss_compiled_matches_pytorch_path(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    durations, hidden, vocab = [0, 1, 2, 3], 8, 21
    head = nn.Linear(hidden, vocab + len(durations))
    encoder = torch.randn(2, 7, hidden, generator=generator)
    decoder = torch.randn(2, 4, hidden, generator=generator)
    arguments = dict(targets=torch.tensor([[1, 2, 3], [4, 5, 0]]), logit_lengths=torch.tensor([7, 5]),
                     target_lengths=torch.tensor([3, 2]), blank_token_id=vocab - 1, durations=durations,
                     chunk_size=5)

    def run():
        inputs = [x.clone().requires_grad_() for x in (encoder, decoder)]
        head.zero_grad()
        loss = fused_joint_tdt_loss(inputs[0], inputs[1], head, torch.relu, **arguments)
        loss.backward()
        return loss.detach(), inputs[0].grad, inputs[1].grad, head.weight.grad.clone(), head.bias.grad.clone()

    for ours, theirs in zip(on_path(True, monkeypatch, run), on_path(False, monkeypatch, run)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@needs_compiler
def test_the_build_is_cached_per_source_flags_and_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("AVALIGN_KERNEL_CACHE", str(tmp_path))
    assert tdt_kernels.kernel_library() is not None
    first = dict(tdt_kernels.kernel_build_info)
    assert first["compile_s"] > 0 and first["path"].startswith(str(tmp_path))
    tdt_kernels.kernel_library.cache_clear()
    assert tdt_kernels.kernel_library() is not None
    assert tdt_kernels.kernel_build_info["path"] == first["path"] and tdt_kernels.kernel_build_info["compile_s"] == 0.0
    assert not list(tmp_path.glob("*.partial"))  # built to a temporary name, then renamed


@needs_compiler
def test_an_unwritable_cache_falls_back_to_a_temporary_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("AVALIGN_KERNEL_CACHE", str(blocker / "kernels"))  # mkdir fails, even as root
    monkeypatch.setattr(tdt_kernels.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert tdt_kernels.kernel_library() is not None
    assert tdt_kernels.kernel_build_info["path"].startswith(str(tmp_path / "tmp"))


@pytest.mark.parametrize("setting", ["disabled", "failing compiler", "no compiler"])
def test_without_kernels_the_loss_falls_back_to_pytorch(monkeypatch, tmp_path, setting):
    monkeypatch.setenv("AVALIGN_KERNEL_CACHE", str(tmp_path))
    if setting == "disabled":
        monkeypatch.setenv("AVALIGN_TDT_KERNELS", "0")
    elif setting == "failing compiler":
        monkeypatch.setenv("CXX", shutil.which("false"))
    else:
        monkeypatch.delenv("CXX", raising=False)
        monkeypatch.setattr(tdt_kernels.shutil, "which", lambda name: None)
    assert tdt_kernels.kernel_library() is None
    assert tdt_kernels.kernel_build_info["disabled"]
    token_logits, duration_logits, arguments = padded_batch(2, 5, 3, 7, [0, 1, 2])
    loss, token_grad, _ = loss_and_grads(token_logits, duration_logits, arguments)
    assert torch.isfinite(loss) and torch.isfinite(token_grad).all()
