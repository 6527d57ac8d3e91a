"""avalign's TDT loss: exact (every path enumerated), equal to transformers' tdt_loss, fused joint == unfused.

Every test runs twice: on the compiled CPU kernels (skipped where no C++ compiler exists) and on the PyTorch path.
"""

import importlib
import math

import pytest
import torch
from torch import nn
from transformers.loss.loss_tdt import tdt_loss as transformers_tdt_loss

from avalign.modeling import tdt_kernels
from avalign.modeling.tdt_loss import REDUCTIONS, fused_joint_tdt_loss, lattice_windows, tdt_loss


# the module itself: `avalign.modeling.tdt_loss` as an attribute is the function the package re-exports
tdt_loss_module = importlib.import_module("avalign.modeling.tdt_loss")


@pytest.fixture(params=["compiled", "pytorch"], autouse=True)
def tdt_path(request, monkeypatch):
    """The loss's implementation under test: the compiled kernels or the PyTorch fallback."""
    tdt_kernels.kernel_library.cache_clear()
    if request.param == "pytorch":
        monkeypatch.setenv("AVALIGN_TDT_KERNELS", "0")
    elif tdt_kernels.kernel_library() is None:
        pytest.skip(f"compiled TDT kernels unavailable: {tdt_kernels.kernel_build_info.get('disabled')}")
    yield request.param
    tdt_kernels.kernel_library.cache_clear()


def random_batch(batch, max_t, max_u, vocab, durations, logit_lengths, target_lengths, dtype=torch.float64, seed=0):
    """Random logits (B, T, U+1, V) and (B, T, U+1, D), targets avoiding blank (= vocab - 1), lengths as tensors."""
    generator = torch.Generator().manual_seed(seed)
    token_logits = torch.randn(batch, max_t, max_u + 1, vocab, generator=generator, dtype=dtype) * 2
    duration_logits = torch.randn(batch, max_t, max_u + 1, len(durations), generator=generator, dtype=dtype)
    targets = torch.randint(0, vocab - 1, (batch, max_u), generator=generator)
    return (token_logits.requires_grad_(), duration_logits.requires_grad_(), targets,
            torch.tensor(logit_lengths), torch.tensor(target_lengths))


def enumerated_log_likelihood(token_log_probs, duration_log_probs, targets, frames, labels, blank, durations):
    """log of the summed weight of every TDT path of one utterance, enumerated one by one (torch ops, so autograd
    gives the exact gradient). token_log_probs (T, U+1, V) include sigma; duration_log_probs (T, U+1, D)."""
    path_log_weights = []

    def walk(t, u, log_weight):
        for j, step in enumerate(durations):
            arrive = t + step
            if step > 0:  # blank arc: the utterance ends if it lands exactly on the last frame after every label
                blank_weight = log_weight + token_log_probs[t, u, blank] + duration_log_probs[t, u, j]
                if arrive == frames and u == labels:
                    path_log_weights.append(blank_weight)
                elif arrive < frames:
                    walk(arrive, u, blank_weight)
            if u < labels and arrive < frames:
                walk(arrive, u + 1, log_weight + token_log_probs[t, u, targets[u]] + duration_log_probs[t, u, j])

    walk(0, 0, torch.zeros((), dtype=token_log_probs.dtype))
    if not path_log_weights:
        return torch.tensor(-math.inf, dtype=token_log_probs.dtype)
    return torch.logsumexp(torch.stack(path_log_weights), 0)


def enumerated_losses(token_logits, duration_logits, targets, logit_lengths, target_lengths, blank, durations, sigma):
    token_log_probs = token_logits.log_softmax(-1) - sigma
    duration_log_probs = duration_logits.log_softmax(-1)
    return -torch.stack([
        enumerated_log_likelihood(token_log_probs[b], duration_log_probs[b], targets[b].tolist(),
                                  int(logit_lengths[b]), int(target_lengths[b]), blank, durations)
        for b in range(len(targets))
    ])


@pytest.mark.parametrize("durations", [[0, 1, 2], [1, 2], [0, 1, 2, 3, 4], [2, 0, 1], [1], [0, 2]])
@pytest.mark.parametrize("sigma", [0.0, 0.4])
def test_loss_and_gradients_equal_enumeration_of_every_path(durations, sigma):
    batch = random_batch(4, 4, 2, 5, durations, logit_lengths=[4, 3, 2, 4], target_lengths=[2, 1, 0, 2],
                         seed=len(durations))
    token_logits, duration_logits, targets, logit_lengths, target_lengths = batch
    expected = enumerated_losses(*batch, blank=4, durations=durations, sigma=sigma)
    losses = tdt_loss(*batch, blank_token_id=4, durations=durations, sigma=sigma, reduction="none")
    possible = torch.isfinite(expected)
    assert possible.any()
    torch.testing.assert_close(losses, expected, rtol=1e-10, atol=1e-10)
    weights = torch.rand(len(losses), dtype=losses.dtype) + 0.5  # different upstream gradient per utterance
    logits = [token_logits, duration_logits]
    grads = torch.autograd.grad((losses[possible] * weights[possible]).sum(), logits)
    expected_grads = torch.autograd.grad((expected[possible] * weights[possible]).sum(), logits)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-10)


def test_gradients_pass_finite_difference_check():
    token_logits, duration_logits, targets, logit_lengths, target_lengths = random_batch(
        2, 3, 1, 3, [0, 1, 2], logit_lengths=[3, 2], target_lengths=[1, 1], seed=3
    )

    def loss(token_logits, duration_logits):
        return tdt_loss(token_logits, duration_logits, targets, logit_lengths, target_lengths, 2, [0, 1, 2],
                        sigma=0.1, reduction="none")

    assert torch.autograd.gradcheck(loss, (token_logits, duration_logits), fast_mode=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("durations", [[0, 1, 2, 3, 4], [1, 2, 3]])
def test_matches_transformers_tdt_loss_on_padded_batches(reduction, durations):
    batch = random_batch(4, 13, 5, 17, durations, logit_lengths=[13, 9, 11, 6], target_lengths=[5, 3, 4, 1],
                         dtype=torch.float32, seed=7)
    token_logits, duration_logits = batch[:2]
    ours = tdt_loss(*batch, blank_token_id=16, durations=durations, sigma=0.05, reduction=reduction)
    theirs = transformers_tdt_loss(*batch, blank_token_id=16, durations=durations, sigma=0.05, reduction=reduction)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)
    upstream = torch.rand_like(ours)
    our_grads = torch.autograd.grad(ours, [token_logits, duration_logits], upstream)
    their_grads = torch.autograd.grad(theirs, [token_logits, duration_logits], upstream)
    for ours_grad, their_grad in zip(our_grads, their_grads):
        # without duration 0, transformers' gradient is NaN on unreachable states (logsumexp of -inf only): the true
        # gradient there is 0
        unreachable = torch.isnan(their_grad)
        assert unreachable.any() == (0 not in durations)
        assert (ours_grad[unreachable] == 0).all()
        torch.testing.assert_close(ours_grad[~unreachable], their_grad[~unreachable], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_logits", [1, 40])
def test_chunked_passes_over_the_logits_change_nothing(monkeypatch, chunk_logits):
    """One frame (or a few) per chunk, as for a real vocabulary: same losses and gradients as in one chunk."""
    batch = random_batch(3, 9, 4, 7, [0, 1, 2], logit_lengths=[9, 6, 8], target_lengths=[4, 2, 0], seed=11)
    logits = batch[:2]
    reference = tdt_loss(*batch, blank_token_id=6, durations=[0, 1, 2], reduction="none")
    reference_grads = torch.autograd.grad(reference.sum(), logits)
    monkeypatch.setattr(tdt_loss_module, "CHUNK_LOGITS", chunk_logits)
    losses = tdt_loss(*batch, blank_token_id=6, durations=[0, 1, 2], reduction="none")
    torch.testing.assert_close(losses, reference, rtol=1e-12, atol=0)
    for grad, reference_grad in zip(torch.autograd.grad(losses.sum(), logits), reference_grads):
        torch.testing.assert_close(grad, reference_grad, rtol=1e-12, atol=1e-15)


def test_peaked_logits_skip_negligible_states_and_stay_at_least_as_accurate_as_transformers(monkeypatch):
    """Log-probs down to ~-200 (a confident model): most states have negligible occupancy and their gradient rows are
    skipped or flushed. Against float64 (exact: see the enumeration test), float32 gradients are no worse than
    transformers' float32 ones; both lose ~ulp(log-normaliser) when logits are this large."""
    monkeypatch.setattr(tdt_loss_module, "CHUNK_LOGITS", 200)  # a few frames per chunk, so bands are cut per chunk
    batch = random_batch(3, 30, 8, 50, [0, 1, 2], logit_lengths=[30, 25, 20], target_lengths=[8, 6, 5],
                         dtype=torch.float32, seed=2)
    token_logits, duration_logits, *alignment = batch
    with torch.no_grad():
        token_logits.mul_(12)
    exact_logits = token_logits.detach().double().requires_grad_()

    def loss_and_grad(loss_function, logits):
        loss = loss_function(logits, duration_logits.detach().to(logits.dtype), *alignment, blank_token_id=49,
                             durations=[0, 1, 2])
        return loss, torch.autograd.grad(loss, logits)[0].double()

    (exact, exact_grad), (ours, our_grad), (theirs, their_grad) = (
        loss_and_grad(tdt_loss, exact_logits), loss_and_grad(tdt_loss, token_logits),
        loss_and_grad(transformers_tdt_loss, token_logits),
    )
    torch.testing.assert_close(ours.double(), exact, rtol=1e-6, atol=0)
    our_error, their_error = ((grad - exact_grad).abs().max() for grad in (our_grad, their_grad))
    assert our_error <= their_error and our_error <= 1e-5 * exact_grad.abs().max()
    assert (our_grad == 0).float().mean() > (their_grad == 0).float().mean()  # rows were skipped


def test_blank_id_inside_vocabulary_and_strided_logits():
    """Blank not last, logits a non-contiguous slice of a joint output (as ParakeetForTDT passes them)."""
    durations = [0, 1, 2]
    joint = torch.randn(2, 6, 4, 9 + len(durations), requires_grad=True)
    targets = torch.tensor([[1, 5, 8], [7, 0, 0]])
    arguments = dict(targets=targets, logit_lengths=torch.tensor([6, 4]), target_lengths=torch.tensor([3, 1]),
                     blank_token_id=2, durations=durations)
    ours = tdt_loss(joint[..., :9], joint[..., 9:], **arguments)
    theirs = transformers_tdt_loss(joint[..., :9], joint[..., 9:], **arguments)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.autograd.grad(ours, joint)[0], torch.autograd.grad(theirs, joint)[0],
                               rtol=1e-4, atol=1e-6)


def test_empty_targets_match_transformers_tdt_loss():
    batch = random_batch(3, 5, 0, 4, [0, 1, 2], logit_lengths=[5, 3, 1], target_lengths=[0, 0, 0], dtype=torch.float32)
    token_logits, duration_logits = batch[:2]
    ours = tdt_loss(*batch, blank_token_id=3, durations=[0, 1, 2], reduction="sum")
    theirs = transformers_tdt_loss(*batch, blank_token_id=3, durations=[0, 1, 2], reduction="sum")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)
    for ours_grad, their_grad in zip(torch.autograd.grad(ours, [token_logits, duration_logits]),
                                     torch.autograd.grad(theirs, [token_logits, duration_logits])):
        torch.testing.assert_close(ours_grad, their_grad, rtol=1e-4, atol=1e-6)


def test_half_precision_logits_give_float32_loss_close_to_float32():
    batch = random_batch(2, 6, 3, 11, [0, 1, 2], logit_lengths=[6, 5], target_lengths=[3, 2], dtype=torch.float32)
    token_logits, duration_logits = batch[:2]
    reference = tdt_loss(*batch, blank_token_id=10, durations=[0, 1, 2])
    half_logits = token_logits.detach().bfloat16().requires_grad_()
    half_durations = duration_logits.detach().bfloat16()
    loss = tdt_loss(half_logits, half_durations, *batch[2:], blank_token_id=10, durations=[0, 1, 2])
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference, rtol=2e-2, atol=0)
    loss.backward()
    assert half_logits.grad.dtype == torch.bfloat16 and torch.isfinite(half_logits.grad).all()


@pytest.mark.parametrize("zero_infinity", [False, True])
def test_impossible_alignments_are_infinite_or_zeroed_without_nan_gradients(zero_infinity):
    # durations without 0: every label and the final blank take >= 1 frame, so 2 labels need >= 3 frames
    durations = [1, 2]
    batch = random_batch(3, 5, 2, 6, durations, logit_lengths=[2, 5, 1], target_lengths=[2, 2, 1], seed=5)
    token_logits, duration_logits = batch[:2]
    losses = tdt_loss(*batch, blank_token_id=5, durations=durations, reduction="none", zero_infinity=zero_infinity)
    impossible = torch.tensor([True, False, True])
    if zero_infinity:
        assert (losses[impossible] == 0).all()
    else:
        assert torch.isposinf(losses[impossible]).all()
    assert torch.isfinite(losses[~impossible]).all()
    for reduction in REDUCTIONS:
        loss = tdt_loss(*batch, blank_token_id=5, durations=durations, reduction=reduction,
                        zero_infinity=zero_infinity)
        grads = torch.autograd.grad(loss.sum(), [token_logits, duration_logits])
        assert all(torch.isfinite(grad).all() for grad in grads)
        assert all((grad[impossible] == 0).all() for grad in grads)
    # the possible utterance gets the gradient it gets alone
    alone = tdt_loss(token_logits[1:2], duration_logits[1:2], batch[2][1:2], batch[3][1:2], batch[4][1:2],
                     blank_token_id=5, durations=durations, reduction="sum")
    torch.testing.assert_close(torch.autograd.grad(losses[1], token_logits)[0][1],
                               torch.autograd.grad(alone, token_logits)[0][1])


def bad_input_cases():
    good = dict(token_logits=torch.randn(2, 4, 3, 5), duration_logits=torch.randn(2, 4, 3, 3),
                targets=torch.tensor([[0, 1], [2, 0]]), logit_lengths=torch.tensor([4, 3]),
                target_lengths=torch.tensor([2, 1]), blank_token_id=4, durations=[0, 1, 2])
    nan_logits = good["token_logits"].clone()
    nan_logits[1, 2, 1, 3] = float("nan")
    inf_durations = good["duration_logits"].clone()
    inf_durations[0, 3, 2, 1] = -float("inf")
    return [
        (dict(token_logits=torch.randn(2, 4, 5)), r"token_logits must be \(B, T, U\+1, V\)"),
        (dict(duration_logits=torch.randn(2, 4, 3, 2)), r"duration_logits must have shape \(2, 4, 3, 3\)"),
        (dict(targets=torch.tensor([[0, 1, 2], [2, 0, 1]])), r"targets must be .* shape \(B, U\) = \(2, 2\)"),
        (dict(targets=torch.tensor([[0.0, 1.0], [2.0, 0.0]])), "targets must be integer ids"),
        (dict(targets=torch.tensor([[0, 5], [2, 0]])), r"targets\[0, 1\] = 5: target ids must lie in \[0, 5\)"),
        (dict(targets=torch.tensor([[0, 1], [4, 0]])), r"targets\[1, 0\] = 4: .*differ from blank_token_id=4"),
        (dict(targets=torch.tensor([[0, -1], [2, 0]])), r"targets\[0, 1\] = -1"),
        (dict(logit_lengths=torch.tensor([5, 3])), r"logit_lengths\[0\] = 5 is outside \[1, 4\]"),
        (dict(logit_lengths=torch.tensor([4, 0])), r"logit_lengths\[1\] = 0 is outside \[1, 4\]"),
        (dict(logit_lengths=torch.tensor([4, 3, 2])), r"logit_lengths must have shape \(2,\)"),
        (dict(target_lengths=torch.tensor([2, 3])), r"target_lengths\[1\] = 3 is outside \[0, 2\]"),
        (dict(durations=[]), "durations is empty"),
        (dict(durations=[0, -1, 2]), "durations must be non-negative integers"),
        (dict(durations=[0, 0, 0]), "at least one > 0"),
        (dict(blank_token_id=5), r"blank_token_id=5 is outside the vocabulary \[0, 5\)"),
        (dict(token_logits=nan_logits), r"token_logits\[1, 2, 1, 3\] = nan: logits must be finite"),
        (dict(duration_logits=inf_durations), r"duration_logits\[0, 3, 2, 1\] = -inf: logits must be finite"),
        (dict(reduction="average"), "Invalid reduction 'average'"),
    ], good


@pytest.mark.parametrize("case", range(len(bad_input_cases()[0])))
def test_bad_input_raises_clear_value_error(case):
    cases, good = bad_input_cases()
    change, message = cases[case]
    with pytest.raises(ValueError, match=message):
        tdt_loss(**{**good, **change})


def test_padding_outside_lengths_is_ignored():
    """Non-finite logits and out-of-range target ids past the lengths change nothing."""
    batch = random_batch(2, 5, 3, 6, [0, 1, 2], logit_lengths=[5, 3], target_lengths=[3, 1])
    token_logits, duration_logits, targets, logit_lengths, target_lengths = batch
    reference = tdt_loss(*batch, blank_token_id=5, durations=[0, 1, 2], reduction="none")
    token_logits, duration_logits, targets = (x.detach().clone() for x in (token_logits, duration_logits, targets))
    token_logits[1, 3:] = float("nan")
    duration_logits[1, :, 2:] = float("inf")
    targets[1, 1:] = -100
    losses = tdt_loss(token_logits, duration_logits, targets, logit_lengths, target_lengths, blank_token_id=5,
                      durations=[0, 1, 2], reduction="none")
    torch.testing.assert_close(losses, reference.detach())


def joint_setup(hidden=8, vocab=7, durations=(0, 1, 2, 3), bias=True, seed=0):
    torch.manual_seed(seed)
    encoder_states = torch.randn(3, 9, hidden, dtype=torch.float64, requires_grad=True)
    decoder_states = torch.randn(3, 4, hidden, dtype=torch.float64, requires_grad=True)
    head = nn.Linear(hidden, vocab + len(durations), bias=bias).double()
    targets = torch.randint(0, vocab - 1, (3, 3))
    lengths = dict(targets=targets, logit_lengths=torch.tensor([9, 6, 4]), target_lengths=torch.tensor([3, 0, 2]),
                   blank_token_id=vocab - 1, durations=list(durations))
    return encoder_states, decoder_states, head, lengths, vocab


@pytest.mark.parametrize("chunk_size", [1, 7, 10_000])
@pytest.mark.parametrize("activation", [torch.relu, nn.Tanh()])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_joint_loss_equals_materialised_joint(chunk_size, activation, bias):
    encoder_states, decoder_states, head, arguments, vocab = joint_setup(bias=bias)
    for reduction in ("mean", "none"):
        arguments.update(sigma=0.05, reduction=reduction)
        joint = head(activation(encoder_states[:, :, None] + decoder_states[:, None]))  # (B, T, U+1, V+D)
        unfused = tdt_loss(joint[..., :vocab], joint[..., vocab:], **arguments)
        fused = fused_joint_tdt_loss(encoder_states, decoder_states, head, activation, chunk_size=chunk_size,
                                     **arguments)
        torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=0)
        inputs = [encoder_states, decoder_states, *head.parameters()]
        upstream = torch.rand_like(fused)
        for fused_grad, unfused_grad in zip(torch.autograd.grad(fused, inputs, upstream),
                                            torch.autograd.grad(unfused, inputs, upstream)):
            torch.testing.assert_close(fused_grad, unfused_grad, rtol=1e-4, atol=1e-10)


def test_fused_joint_loss_rejects_bad_input():
    encoder_states, decoder_states, head, arguments, vocab = joint_setup()
    with pytest.raises(ValueError, match="must agree on B and H"):
        fused_joint_tdt_loss(encoder_states, decoder_states[:, :, :5], head, torch.relu, **arguments)
    with pytest.raises(ValueError, match="trainable parameters"):
        fused_joint_tdt_loss(encoder_states, decoder_states, head, nn.PReLU().double(), **arguments)
    with pytest.raises(ValueError, match=r"targets\[2, 1\] = 6"):
        fused_joint_tdt_loss(encoder_states, decoder_states, head, torch.relu,
                             **{**arguments, "targets": torch.tensor([[0, 1, 2], [0, 0, 0], [3, 6, 0]])})
    broken = encoder_states.detach().clone()
    broken[1, 2, 0] = float("inf")
    with pytest.raises(ValueError, match=r"joint token logits\[1, 2, 0, \d+\] = (-)?(inf|nan): logits must be finite"):
        fused_joint_tdt_loss(broken, decoder_states, head, torch.relu, **arguments)


def test_fused_joint_loss_recomputes_under_the_forward_autocast():
    encoder_states, decoder_states, head, arguments, vocab = joint_setup()
    encoder_states, decoder_states, head = encoder_states.float(), decoder_states.float(), head.float()
    inputs = [encoder_states, decoder_states, *head.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        joint = head(torch.relu(encoder_states[:, :, None] + decoder_states[:, None]))  # bfloat16
        unfused = tdt_loss(joint[..., :vocab], joint[..., vocab:], **arguments)
        fused = fused_joint_tdt_loss(encoder_states, decoder_states, head, torch.relu, **arguments)
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=0)
    # recomputed in bfloat16 like the forward, the state gradients agree closely (in float32 they would be ~0.5% off);
    # the head's gradients are sums over many bfloat16 products, accumulated in another order
    for fused_grad, unfused_grad, tolerance in zip(torch.autograd.grad(fused, inputs),
                                                   torch.autograd.grad(unfused, inputs), [1e-4, 1e-4, 2e-2, 2e-2]):
        assert (fused_grad - unfused_grad).abs().max() <= tolerance * unfused_grad.abs().max()


# ------------------------------------------------------------------------------------------- the pruned loss


def windowed_enumeration(joint, vocab, targets, logit_lengths, target_lengths, blank_token_id, durations, windows):
    """-log of the summed weight of the paths that stay inside the windows: every path enumerated, the states
    outside them taken out of the lattice (their token log-probs -inf)."""
    starts, widths = windows
    u = torch.arange(joint.shape[2])
    inside = (u >= starts[..., None]) & (u < (starts + widths[:, None])[..., None])  # (B, T, U+1)
    token_log_probs = joint[..., :vocab].log_softmax(-1).masked_fill(~inside[..., None], -math.inf)
    duration_log_probs = joint[..., vocab:].log_softmax(-1)
    return -torch.stack([
        enumerated_log_likelihood(token_log_probs[b], duration_log_probs[b], targets[b].tolist(),
                                  int(logit_lengths[b]), int(target_lengths[b]), blank_token_id, durations)
        for b in range(len(targets))
    ])


def pruning_setup(durations=(0, 1, 2), seed=0):
    """A joint of 3 utterances (7, 6, 5 frames; 4, 2, 0 labels) and CTC-like frame logits to place the windows."""
    torch.manual_seed(seed)
    hidden, vocab = 6, 6
    encoder_states = torch.randn(3, 7, hidden, dtype=torch.float64, requires_grad=True)
    decoder_states = torch.randn(3, 5, hidden, dtype=torch.float64, requires_grad=True)
    head = nn.Linear(hidden, vocab + len(durations)).double()
    arguments = dict(targets=torch.randint(0, vocab - 1, (3, 4)), logit_lengths=torch.tensor([7, 6, 5]),
                     target_lengths=torch.tensor([4, 2, 0]), blank_token_id=vocab - 1, durations=list(durations))
    frame_logits = torch.randn(3, 7, vocab) * 3
    return encoder_states, decoder_states, head, arguments, vocab, frame_logits


@pytest.mark.parametrize("width", [2, 3])
def test_pruned_loss_and_gradients_equal_enumeration_of_the_paths_inside_the_windows(width):
    encoder_states, decoder_states, head, arguments, vocab, frame_logits = pruning_setup()
    lengths = {k: arguments[k] for k in ("targets", "logit_lengths", "target_lengths", "blank_token_id")}
    windows = lattice_windows(frame_logits, width=width, **lengths)
    assert windows.widths[0] == width and windows.starts[0].any()  # the first utterance's 5 states are pruned
    inputs = [encoder_states, decoder_states, *head.parameters()]
    pruned = fused_joint_tdt_loss(encoder_states, decoder_states, head, torch.relu, windows=windows,
                                  reduction="none", **arguments)
    joint = head(torch.relu(encoder_states[:, :, None] + decoder_states[:, None]))
    expected = windowed_enumeration(joint, vocab, **arguments, windows=windows)
    exact = tdt_loss(joint[..., :vocab], joint[..., vocab:], reduction="none", **arguments)
    assert torch.isfinite(pruned).all() and pruned[0] > exact[0] + 1e-6  # fewer paths: a larger loss
    torch.testing.assert_close(pruned, expected, rtol=1e-9, atol=1e-9)
    for grad, expected_grad in zip(torch.autograd.grad(pruned.sum(), inputs), torch.autograd.grad(expected.sum(), inputs)):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-7, atol=1e-9)


def test_windows_as_wide_as_the_lattice_give_the_exact_loss():
    encoder_states, decoder_states, head, arguments, vocab, frame_logits = pruning_setup(durations=(0, 1, 2, 3))
    lengths = {k: arguments[k] for k in ("targets", "logit_lengths", "target_lengths", "blank_token_id")}
    windows = lattice_windows(frame_logits, width=5, **lengths)
    assert windows.widths.tolist() == [5, 3, 1] and not windows.starts.any()
    inputs = [encoder_states, decoder_states, *head.parameters()]
    pruned = fused_joint_tdt_loss(encoder_states, decoder_states, head, torch.tanh, windows=windows, **arguments)
    exact = fused_joint_tdt_loss(encoder_states, decoder_states, head, torch.tanh, **arguments)
    torch.testing.assert_close(pruned, exact, rtol=1e-12, atol=0)
    for grad, exact_grad in zip(torch.autograd.grad(pruned, inputs), torch.autograd.grad(exact, inputs)):
        torch.testing.assert_close(grad, exact_grad, rtol=1e-10, atol=1e-12)


def test_lattice_windows_follow_the_frame_alignment_and_stay_connected():
    frames, labels, width, blank = 40, 12, 4, 9
    targets = torch.randint(0, blank, (2, labels), generator=torch.Generator().manual_seed(0))
    frame_logits = torch.full((2, frames, blank + 1), -8.0)
    frame_logits[..., blank] = 0.0
    spikes = torch.arange(labels) * 3 + 2  # label u peaks at frame 3u + 2
    frame_logits[0, spikes, targets[0]] = 8.0
    frame_logits[1, spikes, targets[1]] = 8.0
    windows = lattice_windows(frame_logits, targets, torch.tensor([frames, 30]), torch.tensor([labels, labels]),
                              blank, width)
    starts, ends = windows.starts, windows.starts + windows.widths[:, None]
    for t in range(frames):  # the alignment's state at frame t: labels emitted before it (and at it)
        emitted = int((spikes < t).sum())
        assert starts[0, t] <= emitted < ends[0, t]
    for b, length in enumerate([frames, 30]):
        s = starts[b, :length]
        assert s[0] == 0 and ends[b, length - 1] == labels + 1  # from (0, 0) to the last state
        assert ((s[1:] - s[:-1]) >= 0).all() and ((s[1:] - s[:-1]) <= width - 1).all()


def test_an_utterance_with_more_labels_than_frames_keeps_every_state():
    """CTC has no alignment for it (a transducer has: several labels a frame), so it is not pruned."""
    targets = torch.randint(0, 9, (2, 8), generator=torch.Generator().manual_seed(0))
    frame_logits = torch.randn(2, 10, 10, generator=torch.Generator().manual_seed(1))
    windows = lattice_windows(frame_logits, targets, torch.tensor([10, 6]), torch.tensor([8, 8]), 9, 3)
    assert windows.widths.tolist() == [3, 9] and not windows.starts[1].any() and windows.starts[0].any()


def test_pruning_rejects_bad_input():
    encoder_states, decoder_states, head, arguments, vocab, frame_logits = pruning_setup()
    lengths = {k: arguments[k] for k in ("targets", "logit_lengths", "target_lengths", "blank_token_id")}
    with pytest.raises(ValueError, match="pruning width must be >= 2"):
        lattice_windows(frame_logits, width=1, **lengths)
    windows = lattice_windows(frame_logits, width=3, **lengths)
    with pytest.raises(ValueError, match="needs durations 0 and 1"):
        fused_joint_tdt_loss(encoder_states, decoder_states, head, torch.relu, windows=windows,
                             **{**arguments, "durations": [1, 2, 3]})
    shifted = windows._replace(starts=windows.starts + 3)
    with pytest.raises(ValueError, match=r"window \[3, 6\) of utterance 0, frame 0 lies outside its states \[0, 5\)"):
        fused_joint_tdt_loss(encoder_states, decoder_states, head, torch.relu, windows=shifted, **arguments)
