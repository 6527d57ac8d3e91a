"""TDT (token-and-duration transducer, https://arxiv.org/abs/2304.06795) loss: exact, fast and memory-lean.

`tdt_loss` is a drop-in for `transformers.loss.loss_tdt.tdt_loss` (same arguments, same reductions) with an
analytic backward: it never materialises a log-softmax of the (B, T, U+1, V) token logits; it reads them in
cache-sized chunks once forward (log-normalisers, blank and label logits) and once backward (softmax times the
occupancy of each lattice state, written straight into the gradient). `fused_joint_tdt_loss` goes further for
training: the joint `head(activation(encoder + decoder))` itself is computed chunk by chunk, so the
(B, T, U+1, V+D) joint output never exists; backward recomputes each chunk.

The lattice. State (t, u): frame t reached with u labels emitted, starting at (0, 0). For each duration index j
(value d_j) a state has a label arc to (t + d_j, u + 1) (any d_j, 0 included) weighted
log p(target_u | t, u) - sigma + log p(d_j | t, u), and a blank arc (d_j > 0 only) to (t + d_j, u) weighted
log p(blank | t, u) - sigma + log p(d_j | t, u). An utterance of T_b frames and U_b labels ends with a blank arc
from (T_b - d_j, U_b) that lands exactly on T_b; no arc lands on or past T_b otherwise. The loss is minus the log of
the summed weight of every path, computed in float64 by a forward (alpha) and a backward (beta) recursion over t,
all durations and utterances at once; zero-duration label arcs chain states within a frame and are summed by a
log-space cumulative sum over u.

exp is never asked for results below the normal float range (CPUs compute those ~100x slower): its arguments are
clamped there, and gradient entries at that level (below ~3e-38 in float32) are flushed to exactly zero; backward
skips the rows of states whose occupancy is that small.
"""

import contextlib
import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .tdt_kernels import (
    MAX_KERNEL_DURATIONS,
    compiled_arcs,
    compiled_log_alpha,
    compiled_log_beta,
    compiled_state_gradients,
    compiled_token_gradient,
    compiled_token_statistics,
    empty_gradient,
    kernel_library,
    kernels_for,
)


REDUCTIONS = ("mean_volume", "mean_batch", "mean", "sum", "none")
# fused_joint_tdt_loss's default chunk: as many (t, u) positions as fit 24 MiB of float32 joint activations and
# outputs (H + V + D per position). Per-chunk costs (Python, autograd, a kernel call) shrink with larger chunks and
# memory grows: 24 MiB keeps bench_fused_joint under 1/3 of the unfused peak and the demo's utterances in one chunk.
JOINT_CHUNK_BYTES = 24 << 20
CHUNK_LOGITS = 1 << 19  # token logits read per chunk in tdt_loss: 2 MiB of float32, temporaries stay in cache
NEG_INF = float("-inf")
NO_ARC = -1e4  # an arc weight that no path through it can recover from, in float64


# ----------------------------------------------------------------------------------------------- input checks


def _check_options(durations, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"Invalid reduction {reduction!r}: expected one of {', '.join(map(repr, REDUCTIONS))}.")
    if not durations:
        raise ValueError("durations is empty: give the duration values the model predicts, e.g. [0, 1, 2, 3, 4].")
    if any(int(d) != d or d < 0 for d in durations) or not any(d > 0 for d in durations):
        raise ValueError(f"durations must be non-negative integers with at least one > 0, got {list(durations)}.")


def _check_alignment_inputs(targets, logit_lengths, target_lengths, blank_token_id, shape, vocab_size):
    """Validate targets, lengths and the blank id against a (B, T, U+1) lattice; returns them as long tensors."""
    batch, max_t, max_u1 = shape
    if not 0 <= blank_token_id < vocab_size:
        raise ValueError(f"blank_token_id={blank_token_id} is outside the vocabulary [0, {vocab_size}).")
    targets, logit_lengths, target_lengths = (torch.as_tensor(x) for x in (targets, logit_lengths, target_lengths))
    if targets.dtype.is_floating_point or targets.dim() != 2 or tuple(targets.shape) != (batch, max_u1 - 1):
        raise ValueError(
            f"targets must be integer ids of shape (B, U) = ({batch}, {max_u1 - 1}), got {targets.dtype} "
            f"{tuple(targets.shape)}."
        )
    length_ranges = (("logit_lengths", logit_lengths, 1, max_t), ("target_lengths", target_lengths, 0, max_u1 - 1))
    for name, lengths, low, high in length_ranges:
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ValueError(f"{name} must have shape ({batch},), got {tuple(lengths.shape)}.")
        bad = ((lengths < low) | (lengths > high)).nonzero()
        if len(bad):
            row = int(bad[0])
            raise ValueError(f"{name}[{row}] = {int(lengths[row])} is outside [{low}, {high}].")
    positions = torch.arange(targets.shape[1], device=targets.device)
    counted = positions < target_lengths.to(targets.device)[:, None]  # (B, U) targets within each length
    bad = (counted & ((targets < 0) | (targets >= vocab_size) | (targets == blank_token_id))).nonzero()
    if len(bad):
        row, position = bad[0].tolist()
        raise ValueError(
            f"targets[{row}, {position}] = {int(targets[row, position])}: target ids must lie in [0, {vocab_size}) "
            f"and differ from blank_token_id={blank_token_id}."
        )
    return targets.long(), logit_lengths.long(), target_lengths.long()


def _check_finite(name, finite, logits_at):
    """Raise naming the first non-finite logit among the rows flagged False in `finite` (B, T, U+1);
    logits_at(b, t, u) returns that row of logits (V,)."""
    for index in (~finite).nonzero().tolist():
        row = logits_at(*index)
        bad = (~torch.isfinite(row)).nonzero()
        if len(bad):
            column = int(bad[0])
            position = ", ".join(str(i) for i in index + [column])
            raise ValueError(f"{name}[{position}] = {float(row[column])}: logits must be finite.")


def _valid_states(logit_lengths, target_lengths, max_t, max_u1):
    """(B, T, U+1) bool: the states (t < T_b, u <= U_b) that belong to each utterance."""
    t = torch.arange(max_t, device=logit_lengths.device)
    u = torch.arange(max_u1, device=logit_lengths.device)
    return (t[None, :, None] < logit_lengths[:, None, None]) & (u[None, None, :] <= target_lengths[:, None, None])


def _label_ids(targets, target_lengths, blank_token_id):
    """(B, U+1) the label emitted from each u; blank where there is none (past U_b), so it is always a valid id."""
    padded = F.pad(targets, (0, 1), value=blank_token_id)
    positions = torch.arange(padded.shape[1], device=targets.device)
    return padded.masked_fill(positions >= target_lengths[:, None], blank_token_id)


def _frame_chunks(logit_lengths, target_lengths, positions_per_chunk, rows=None):
    """Yield (b, t0, t1, u0, u1): frames [t0, t1) of utterance b (valid frames only, (t1 - t0) * (U_b + 1) ~
    positions_per_chunk) and their rows [u0, u1): all U_b + 1 of them, or with `rows` (B, T, U+1) bool the span of
    the True rows of those frames (u0 == u1 when there are none)."""
    if rows is not None:  # per frame: first True row and one past the last, (U+1, 0) when there is none
        has_rows = rows.any(-1)
        first = torch.where(has_rows, rows.int().argmax(-1), rows.shape[-1]).tolist()
        end = torch.where(has_rows, rows.shape[-1] - rows.flip(-1).int().argmax(-1), 0).tolist()
    for b, (frames, labels) in enumerate(zip(logit_lengths.tolist(), target_lengths.tolist())):
        step = max(1, positions_per_chunk // (labels + 1))
        for t0 in range(0, frames, step):
            t1 = min(t0 + step, frames)
            if rows is None:
                yield b, t0, t1, 0, labels + 1
            else:
                u0, u1 = min(first[b][t0:t1]), max(end[b][t0:t1])
                yield (b, t0, t1, u0, u1) if u0 < u1 else (b, t0, t1, 0, 0)


# ------------------------------------------------------------------------------------------- token statistics


def _compute_dtype(dtype):
    """Half-precision logits are reduced in float32; float32 and float64 in their own precision."""
    return torch.promote_types(dtype, torch.float32)


@functools.cache
def _exp_floor(dtype):
    """exp below this argument leaves the normal float range, where CPUs take a ~100x slower path."""
    return math.log(torch.finfo(dtype).tiny) + 1.0


@functools.cache
def _flush_level(dtype):
    """Gradient entries at or below this (3.2e-38 in float32) are flushed to zero."""
    return math.exp(_exp_floor(dtype)) * (1 + 1e-4)


def _exp_(x, flush):
    """exp in place with arguments clamped at `_exp_floor`; with flush=True results at the floor become exactly 0."""
    x.clamp_(min=_exp_floor(x.dtype)).exp_()
    if flush:
        torch.threshold_(x, _flush_level(x.dtype), 0.0)
    return x


def _token_statistics(token_logits, label_ids, blank_token_id):
    """Per (t, u) statistics of a chunk of token logits (nt, n_u, V) and the labels emitted from each of its rows,
    (1, n_u) when every frame has the same rows or (nt, n_u).

    Returns (nt, n_u) tensors, at least float32: log-normaliser, blank logit, label logit, and a finiteness flag
    (False where the log-normaliser is not: a row with a NaN or +inf logit, or only -inf ones).
    """
    kernels = kernels_for(token_logits)
    label_ids = label_ids.expand(token_logits.shape[0], -1)
    if kernels is not None:  # the chunk as nt utterances of one frame each
        frames, labels = _chunk_lengths(token_logits)
        statistics = compiled_token_statistics(kernels, token_logits[:, None], label_ids, frames, labels,
                                               blank_token_id)
        return [x[:, 0] for x in statistics]
    rows = token_logits.to(_compute_dtype(token_logits.dtype))
    high = rows.amax(-1)  # NaN or +inf here makes the log-normaliser NaN: no separate pass over the logits
    log_normalizer = _exp_(rows - high[..., None], flush=False).sum(-1).log_().add_(high)  # the sum is >= 1
    finite = torch.isfinite(log_normalizer)
    blank = rows[..., blank_token_id]
    label = rows.gather(-1, label_ids[..., None])[..., 0]
    return log_normalizer, blank, label, finite


class _TokenGradient(NamedTuple):
    """d loss / d token_logits in per-state form (B, T, U+1), scaled by the incoming gradient: softmax * occupancy
    minus the blank and label arc occupancies at their ids. A chunk's own has (nt, n_u) tensors and a sign a frame."""

    softmax_shift: torch.Tensor  # log-normaliser - log|occupancy|: softmax * |occupancy| = exp(logits - shift)
    blank_occupancy: torch.Tensor
    label_occupancy: torch.Tensor
    significant: torch.Tensor  # bool: |occupancy| above the flush level (all other rows are zero)
    negative: list[bool]  # (B,) the sign of each utterance's incoming gradient ((nt,) of each frame's in a chunk)

    def chunk(self, states, utterances):
        """The gradient at `states` (nt, n_u), flat ids into (B, T, U+1), of frames of `utterances` (nt,)."""
        return _TokenGradient(*(x.reshape(-1)[states] for x in self[:4]),
                              negative=[self.negative[b] for b in utterances.tolist()])


def _chunk_lengths(token_logits):
    """(nt,) frames and (nt,) labels of a chunk (nt, n_u, V) taken as nt utterances of one frame: every row counts."""
    frames, rows = token_logits.shape[:2]
    return torch.ones(frames, dtype=torch.long), torch.full((frames,), rows - 1, dtype=torch.long)


def _token_logits_grad(token_logits, gradient, label_ids, blank_token_id, out):
    """Write the gradient of a chunk of token logits (nt, n_u, V) into `out`, from `gradient`, the chunk's own
    `_TokenGradient`; label_ids (1 or nt, n_u) are the labels emitted from its rows. Entries below the flush level
    come out as 0."""
    kernels = kernels_for(token_logits)
    label_ids = label_ids.expand(token_logits.shape[0], -1)
    if kernels is not None and out.stride(-1) == 1 and out.dtype == token_logits.dtype:
        frames, labels = _chunk_lengths(token_logits)
        per_frame = _TokenGradient(*[x[:, None] for x in gradient[:4]], negative=gradient.negative)
        compiled_token_gradient(kernels, token_logits[:, None], per_frame, label_ids, frames, labels,
                                blank_token_id, out[:, None])
        return
    dtype = _compute_dtype(out.dtype)
    work = out if out.dtype == dtype else torch.empty(out.shape, dtype=dtype, device=out.device)
    _exp_(torch.sub(token_logits, gradient.softmax_shift[..., None], out=work), flush=True)
    if any(gradient.negative):
        work[torch.tensor(gradient.negative, device=work.device)] *= -1
    work[..., blank_token_id].sub_(gradient.blank_occupancy)
    work.scatter_add_(-1, label_ids[..., None], -gradient.label_occupancy[..., None])
    if work is not out:
        out.copy_(work)


# -------------------------------------------------------------------------------------------------- the lattice


class _Lattice:
    """The arc log-weights of a batch of TDT lattices and the forward-backward over them (float64).

    blank, label: (B, T, U+1, D) arc log-weights (blank -inf at d = 0; label -inf where nothing is left to emit);
    final: (B, T, U+1) the log-weight of ending from each state; duration_log_probs: (B, T, U+1, D). Build it with
    `from_statistics`. `kernels`: the compiled library that runs the recursions, or None (the PyTorch path).
    """

    def __init__(self, blank, label, final, duration_log_probs, durations, logit_lengths, target_lengths, kernels):
        self.blank, self.label, self.final, self.duration_log_probs = blank, label, final, duration_log_probs
        self.kernels = kernels
        self.rows = None  # a pruned lattice's rows per frame, (start, end) (B, T): the compiled recursions skip others
        self.durations = torch.tensor(durations, device=blank.device)
        self.positive = (self.durations > 0).nonzero()[:, 0]  # indices j with d_j > 0
        self.steps = self.durations[self.positive]  # (D+,)
        self.max_step = max(durations)
        self.has_zero = 0 in durations
        self.logit_lengths, self.target_lengths = logit_lengths, target_lengths

    @classmethod
    def from_statistics(cls, log_normalizer, blank_logit, label_logit, duration_logits, sigma, durations,
                        logit_lengths, target_lengths):
        """Build the lattice from per-state statistics (B, T, U+1) and duration logits (B, T, U+1, D).

        Returns the lattice and (B, T, U+1) bool: every duration logit of the state is finite (True outside the
        utterances)."""
        device = duration_logits.device
        compiled = device.type == "cpu" and len(durations) <= MAX_KERNEL_DURATIONS
        kernels = kernel_library() if compiled else None
        if kernels is not None:
            *arcs, finite = compiled_arcs(kernels, log_normalizer, blank_logit, label_logit, duration_logits, sigma,
                                          durations, logit_lengths, target_lengths)
            log_probs, blank, label, final = arcs
            return cls(blank, label, final, log_probs, durations, logit_lengths, target_lengths, kernels), finite
        valid = _valid_states(logit_lengths, target_lengths, *duration_logits.shape[1:3])
        finite = torch.isfinite(duration_logits).all(-1) | ~valid
        log_probs = duration_logits.double().masked_fill(~valid[..., None], 0.0).log_softmax(-1)
        blank_log_probs = blank_logit.double() - log_normalizer.double() - sigma  # (B, T, U+1)
        label_log_probs = label_logit.double() - log_normalizer.double() - sigma
        zero = torch.tensor(durations, device=device) == 0
        blank = (blank_log_probs[..., None] + log_probs).masked_fill(zero, NEG_INF)
        label = label_log_probs[..., None] + log_probs  # (B, T, U+1, D)
        label[:, :, -1] = NEG_INF  # nothing left to emit after the last target
        final = cls._final_log_weights(blank, durations, logit_lengths, target_lengths)
        return cls(blank, label, final, log_probs, durations, logit_lengths, target_lengths, None), finite

    @staticmethod
    def _final_log_weights(blank, durations, logit_lengths, target_lengths):
        """(B, T, U+1): log-weight of ending the utterance from each state (blank arcs landing exactly on T_b)."""
        batch, max_t, max_u1, _ = blank.shape
        final = blank.new_full((batch, max_t, max_u1), NEG_INF)
        rows = torch.arange(batch, device=final.device)
        for j, step in enumerate(durations):
            start = logit_lengths - step  # (B,)
            ok = start >= 0
            if step == 0:
                continue
            b, t, u = rows[ok], start[ok], target_lengths[ok]
            final[b, t, u] = torch.logaddexp(final[b, t, u], blank[b, t, u, j])
        return final

    @functools.cached_property
    def in_place_cumsum(self):
        """(B, T, U+1): zero-duration label arcs (t, u) -> (t, u + 1), chained: their log-weight from (t, 0)."""
        label_in_place = self.label[..., self.durations == 0].logsumexp(-1)  # (B, T, U+1)
        # an arc of log-weight -inf (out of a pruned state) would turn the running sums into NaN; e^-10000 is as
        # good as no arc in float64 (a path through it loses to any other by far more than the 53-bit mantissa)
        label_in_place = label_in_place.clamp(min=NO_ARC)
        return F.pad(label_in_place[..., :-1].cumsum(-1), (1, 0))

    def _arcs_by_step(self, weights):
        """(B, T, U+1, D) -> (B, T, D+, U+1): the positive-duration arcs, contiguous per frame."""
        return weights[..., self.positive].permute(0, 1, 3, 2)

    def log_alpha(self):
        """(B, T, U+1): log-weight of all partial paths from (0, 0) to each state."""
        if self.kernels is not None:
            return compiled_log_alpha(self.kernels, self.blank, self.label, self.durations, self.logit_lengths,
                                      self.target_lengths, self.rows)
        batch, max_t, max_u1, _ = self.blank.shape
        pad, step_index = self.max_step, torch.arange(len(self.steps), device=self.blank.device)
        sources = torch.arange(max_t, device=self.blank.device)[:, None] + pad - self.steps  # (T, D+) padded rows
        # arcs entering (t, u) from frame t - d: blank from (t - d, u), label from (t - d, u - 1)
        blank_in = F.pad(self._arcs_by_step(self.blank), (0, 0, 0, 0, pad, 0), value=NEG_INF)
        label_in = F.pad(self._arcs_by_step(self.label), (1, 0, 0, 0, pad, 0), value=NEG_INF)[..., :-1]
        entering = torch.cat([blank_in[:, sources, step_index], label_in[:, sources, step_index]], dim=2)
        # (B, T, 2 D+, U+1); alpha gets `pad` frames before t = 0 and a column before u = 0
        alpha = self.blank.new_full((batch, pad + max_t, max_u1 + 1), NEG_INF)
        for t in range(max_t):
            source = alpha[:, sources[t]]  # (B, D+, U+2)
            row = (torch.cat([source[..., 1:], source[..., :-1]], dim=1) + entering[:, t]).logsumexp(1)  # (B, U+1)
            if t == 0:
                row[:, 0] = 0.0
            if self.has_zero:  # alpha(t, u) = row(u) + sum over u' < u of alpha(t, u') * zero-duration label arcs
                cumsum = self.in_place_cumsum[:, t]
                row = cumsum + torch.logcumsumexp(row - cumsum, dim=-1)
            alpha[:, pad + t, 1:] = row
        return alpha[:, pad:, 1:]

    def log_beta(self):
        """(B, T, U+1): log-weight of all partial paths from each state to the end of its utterance."""
        if self.kernels is not None:
            return compiled_log_beta(self.kernels, self.blank, self.label, self.final, self.durations,
                                     self.logit_lengths, self.target_lengths, self.rows)
        batch, max_t, max_u1, _ = self.blank.shape
        # arcs leaving (t, u) to frame t + d: blank to (t + d, u), label to (t + d, u + 1)
        leaving = torch.cat([self._arcs_by_step(self.blank), self._arcs_by_step(self.label)], dim=2)  # (B,T,2D+,U+1)
        beta = self.blank.new_full((batch, max_t + self.max_step, max_u1 + 1), NEG_INF)  # frames past T, column U+1
        for t in reversed(range(max_t)):
            target = beta[:, t + self.steps]  # (B, D+, U+2)
            row = (torch.cat([target[..., :-1], target[..., 1:]], dim=1) + leaving[:, t]).logsumexp(1)
            row = torch.logaddexp(row, self.final[:, t])
            if self.has_zero:  # beta(t, u) = row(u) + zero-duration label arcs to beta(t, u') for u' > u
                cumsum = self.in_place_cumsum[:, t]
                row = torch.logcumsumexp((row + cumsum).flip(-1), dim=-1).flip(-1) - cumsum
            beta[:, t, :-1] = row
        return beta[:, :max_t, :-1]

    def log_likelihood(self, log_alpha):
        """(B,): log-weight of all complete paths."""
        return (log_alpha + self.final).flatten(1).logsumexp(-1)

    def occupancies(self, log_alpha, log_beta, log_likelihood, scale):
        """Expected use of each arc, times `scale` (B,): blank and label arc occupancies (B, T, U+1, D).

        Utterances with no path (log_likelihood = -inf) get zero occupancy.
        """
        batch, max_t, max_u1, _ = self.blank.shape
        rows = torch.arange(batch, device=scale.device)
        # beta of the destination of every arc, with the end of each utterance (T_b, U_b) at log-weight 0 for blanks
        beta = F.pad(log_beta, (0, 1, 0, self.max_step), value=NEG_INF)  # (B, T + max_step, U+2)
        beta_ends = beta.clone()
        beta_ends[rows, self.logit_lengths, self.target_lengths] = 0.0
        destinations = torch.arange(max_t, device=scale.device)[:, None] + self.durations  # (T, D)
        log_norm = log_alpha - torch.where(torch.isfinite(log_likelihood), log_likelihood, 0.0)[:, None, None]
        blank = torch.exp(self.blank + log_norm[..., None] + beta_ends[:, destinations, :-1].transpose(2, 3))
        label = torch.exp(self.label + log_norm[..., None] + beta[:, destinations, 1:].transpose(2, 3))
        scale = scale.to(blank.dtype)[:, None, None, None]
        return blank * scale, label * scale


# -------------------------------------------------------------------------------- shared forward/backward steps


def _losses(lattice, zero_infinity):
    """Per-utterance losses (B,) and the alpha recursion they came from."""
    log_alpha = lattice.log_alpha()
    log_likelihood = lattice.log_likelihood(log_alpha)
    losses = -log_likelihood
    if zero_infinity:
        losses = torch.where(torch.isinf(losses), 0.0, losses)
    return losses, log_alpha, log_likelihood


def _state_gradients(lattice, log_normalizer, log_alpha, log_likelihood, grad_losses):
    """d loss / d logits of the lattice scaled by grad_losses (B,): the token part as a `_TokenGradient` and the full
    gradient of the duration logits (B, T, U+1, D)."""
    dtype, log_beta = log_normalizer.dtype, lattice.log_beta()
    if lattice.kernels is not None:
        *per_state, duration_grad = compiled_state_gradients(
            lattice.kernels, lattice.blank, lattice.label, lattice.duration_log_probs, log_alpha, log_beta,
            log_likelihood, grad_losses, log_normalizer, lattice.durations, lattice.logit_lengths,
            lattice.target_lengths, _flush_level(dtype),
        )
        shift, blank_occupancy, label_occupancy, significant = per_state
    else:
        blank, label = lattice.occupancies(log_alpha, log_beta, log_likelihood, grad_losses)
        blank_occupancy, label_occupancy = blank.sum(-1), label.sum(-1)
        occupancy = blank_occupancy + label_occupancy
        duration_grad = lattice.duration_log_probs.exp() * occupancy[..., None] - (blank + label)
        shift, significant = log_normalizer - occupancy.abs().log(), occupancy.abs() > _flush_level(dtype)
    token_gradient = _TokenGradient(
        softmax_shift=shift.to(dtype),
        blank_occupancy=blank_occupancy.to(dtype),
        label_occupancy=label_occupancy.to(dtype),
        significant=significant,
        negative=(grad_losses < 0).tolist(),
    )
    return token_gradient, duration_grad


def _reduce(losses, target_lengths, reduction):
    """Reduce per-utterance losses like transformers' tdt_loss; empty targets count as length 1 (never 0 / 0)."""
    lengths = target_lengths.to(losses.dtype)
    if reduction == "mean_volume":
        return losses.sum() / lengths.sum().clamp(min=1)
    if reduction == "mean_batch":
        return losses.mean()
    if reduction == "mean":
        return (losses / lengths.clamp(min=1)).mean()
    if reduction == "sum":
        return losses.sum()
    return losses


# ----------------------------------------------------------------------------------------------------- tdt_loss


class _TDTLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, token_logits, duration_logits, targets, logit_lengths, target_lengths, blank_token_id,
                durations, sigma, zero_infinity):
        batch, max_t, max_u1, _ = token_logits.shape
        label_ids = _label_ids(targets, target_lengths, blank_token_id)
        dtype = _compute_dtype(token_logits.dtype)
        kernels = kernels_for(token_logits)
        if kernels is not None:  # one call over every state
            *statistics, finite = compiled_token_statistics(kernels, token_logits, label_ids, logit_lengths,
                                                            target_lengths, blank_token_id)
        else:
            statistics = token_logits.new_zeros((3, batch, max_t, max_u1), dtype=dtype)
            finite = torch.ones((batch, max_t, max_u1), dtype=torch.bool, device=token_logits.device)
            chunks = _frame_chunks(logit_lengths, target_lengths, CHUNK_LOGITS // token_logits.shape[-1])
            for b, t0, t1, _, n_u in chunks:
                *chunk_statistics, finite[b, t0:t1, :n_u] = _token_statistics(
                    token_logits[b, t0:t1, :n_u], label_ids[b, :n_u], blank_token_id
                )
                statistics[:, b, t0:t1, :n_u] = torch.stack(chunk_statistics)  # (3, nt, n_u)
        _check_finite("token_logits", finite, lambda b, t, u: token_logits[b, t, u])
        log_normalizer, blank_logit, label_logit = statistics
        lattice, finite = _Lattice.from_statistics(log_normalizer, blank_logit, label_logit, duration_logits, sigma,
                                                   durations, logit_lengths, target_lengths)
        _check_finite("duration_logits", finite, lambda b, t, u: duration_logits[b, t, u])
        losses, log_alpha, log_likelihood = _losses(lattice, zero_infinity)
        ctx.save_for_backward(token_logits, log_normalizer, label_ids, log_alpha, log_likelihood)
        ctx.lattice, ctx.blank_token_id, ctx.duration_dtype = lattice, blank_token_id, duration_logits.dtype
        return losses.to(dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_losses):
        token_logits, log_normalizer, label_ids, log_alpha, log_likelihood = ctx.saved_tensors
        lattice = ctx.lattice
        token_gradient, duration_grad = _state_gradients(
            lattice, log_normalizer, log_alpha, log_likelihood, grad_losses
        )
        token_grad = None
        kernels = kernels_for(token_logits)
        if ctx.needs_input_grad[0] and kernels is not None:  # one call: every entry, zeros included
            token_grad = empty_gradient(kernels, token_logits)
            compiled_token_gradient(kernels, token_logits, token_gradient, label_ids, lattice.logit_lengths,
                                    lattice.target_lengths, ctx.blank_token_id, token_grad)
        elif ctx.needs_input_grad[0]:
            token_grad = torch.empty(token_logits.shape, dtype=token_logits.dtype, device=token_logits.device)
            for b, frames in enumerate(lattice.logit_lengths.tolist()):
                token_grad[b, frames:].zero_()
            positions_per_chunk = CHUNK_LOGITS // token_logits.shape[-1]
            chunks = _frame_chunks(lattice.logit_lengths, lattice.target_lengths, positions_per_chunk,
                                   rows=token_gradient.significant)
            for b, t0, t1, u0, u1 in chunks:
                token_grad[b, t0:t1, :u0].zero_()
                token_grad[b, t0:t1, u1:].zero_()
                if u0 < u1:
                    state = (b, slice(t0, t1), slice(u0, u1))
                    chunk = _Chunk.of_frames(b, t0, t1, u0, u1, token_logits.shape[1:3], token_logits.device)
                    _token_logits_grad(token_logits[state], token_gradient.chunk(chunk.states, chunk.utterances),
                                       label_ids[b, u0:u1], ctx.blank_token_id, out=token_grad[state])
        duration_grad = duration_grad.to(ctx.duration_dtype) if ctx.needs_input_grad[1] else None
        return token_grad, duration_grad, None, None, None, None, None, None, None


def tdt_loss(
    token_logits: torch.Tensor,
    duration_logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_token_id: int,
    durations: list[int],
    sigma: float = 0.0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    """TDT loss; a drop-in for `transformers.loss.loss_tdt.tdt_loss` with an exact analytic backward.

    Args:
        token_logits: (B, T, U+1, V) joint token logits, blank included. Any strides (e.g. a slice of the joint).
        duration_logits: (B, T, U+1, D) joint duration logits.
        targets: (B, U) target ids; entries past each target length are ignored (any padding value).
        logit_lengths: (B,) frames per utterance, in [1, T]; frames past them are never read.
        target_lengths: (B,) targets per utterance, in [0, U].
        blank_token_id: the blank id, in [0, V).
        durations: the D duration values (non-negative, at least one > 0), in the order of the duration logits.
        sigma: logit under-normalisation: subtracted from every token log-prob (blank and labels).
        reduction: "mean_volume" (sum / total target length), "mean_batch" (mean), "mean" (mean of loss / target
            length), "sum" or "none" (per-utterance losses (B,)). Empty targets count as length 1 in the divisions.
        zero_infinity: an utterance with no alignment at all (e.g. fewer frames than its labels need when 0 is not a
            duration) has an infinite loss. With `zero_infinity=True` that loss is replaced by 0, as in
            `torch.nn.functional.ctc_loss`; either way its gradient is zero, never NaN.

    Returns:
        The reduced loss (float32 for float32 or half-precision logits, float64 for float64), or (B,) per-utterance
        losses with reduction="none". Gradient entries below ~3e-38 (float32) are flushed to zero.

    Raises:
        ValueError: naming the offending shape, id, length or (first) non-finite logit.
    """
    _check_options(durations, reduction)
    if token_logits.dim() != 4 or duration_logits.dim() != 4:
        raise ValueError(
            f"token_logits must be (B, T, U+1, V) and duration_logits (B, T, U+1, D), got shapes "
            f"{tuple(token_logits.shape)} and {tuple(duration_logits.shape)}."
        )
    if duration_logits.shape[:3] != token_logits.shape[:3] or duration_logits.shape[3] != len(durations):
        raise ValueError(
            f"duration_logits must have shape {tuple(token_logits.shape[:3]) + (len(durations),)} (B, T, U+1, "
            f"len(durations)), got {tuple(duration_logits.shape)}."
        )
    targets, logit_lengths, target_lengths = _check_alignment_inputs(
        targets, logit_lengths, target_lengths, blank_token_id, token_logits.shape[:3], token_logits.shape[3]
    )
    device = token_logits.device
    losses = _TDTLoss.apply(
        token_logits, duration_logits, targets.to(device), logit_lengths.to(device), target_lengths.to(device),
        blank_token_id, list(durations), float(sigma), zero_infinity,
    )
    return _reduce(losses, target_lengths.to(device), reduction)


# ------------------------------------------------------------------------------------------ fused joint + loss


def _joint_logits(encoder_states, decoder_states, weight, bias, activation):
    """(nt, H), (1 or nt, n_u, H) -> (nt, n_u, V+D): head(activation(enc + dec)), as ParakeetTDTJointNetwork does."""
    return F.linear(activation(encoder_states[:, None] + decoder_states), weight, bias)


class _Chunk(NamedTuple):
    """Joint positions computed at once: N frames of the lattice (B, T, U+1) and n_u rows (states u) of each."""

    frames: torch.Tensor  # (N,) flat frame ids b * T + t
    utterances: torch.Tensor  # (N,) b of each frame
    rows: torch.Tensor  # (1 or N, n_u) the states u of each frame (1: the same for every frame)
    states: torch.Tensor  # (N, n_u) flat state ids into (B, T, U+1)
    decoder_rows: torch.Tensor  # (1 or N, n_u) flat ids into the (B, U+1) decoder states (and labels)

    @classmethod
    def of_frames(cls, b, t0, t1, u0, u1, lattice_shape, device):
        """Frames [t0, t1) of utterance b, rows [u0, u1) of each."""
        max_t, max_u1 = lattice_shape
        frames = b * max_t + torch.arange(t0, t1, device=device)
        return cls.of_rows(frames, torch.full_like(frames, b), torch.arange(u0, u1, device=device)[None], max_u1)

    @classmethod
    def of_rows(cls, frames, utterances, rows, max_u1):
        decoder_rows = (utterances[:1] if len(rows) == 1 else utterances)[:, None] * max_u1 + rows
        return cls(frames, utterances, rows, frames[:, None] * max_u1 + rows, decoder_rows)


def _joint_chunks(logit_lengths, target_lengths, lattice_shape, positions_per_chunk, windows=None, significant=None):
    """Yield `_Chunk`s of ~positions_per_chunk joint positions: without `windows`, frames of one utterance at a time
    with every row of it (with `significant` (B, T, U+1) bool, the span of its True rows); with `windows`, each
    frame's window, frames of every utterance whose windows have one width together."""
    device = logit_lengths.device
    if windows is None:
        for b, t0, t1, u0, u1 in _frame_chunks(logit_lengths, target_lengths, positions_per_chunk, significant):
            yield _Chunk.of_frames(b, t0, t1, u0, u1, lattice_shape, device)
        return
    max_t, max_u1 = lattice_shape
    in_utterance = torch.arange(max_t, device=device)[None] < logit_lengths[:, None]  # (B, T)
    for width in windows.widths.unique().tolist():
        utterances, times = (in_utterance & (windows.widths[:, None] == width)).nonzero(as_tuple=True)
        step, offsets = max(1, positions_per_chunk // width), torch.arange(width, device=device)
        for first in range(0, len(utterances), step):
            b, t = utterances[first : first + step], times[first : first + step]
            yield _Chunk.of_rows(b * max_t + t, b, windows.starts[b, t, None] + offsets, max_u1)


def _joint_inputs(frames, decoder_rows, weight, bias, chunk, needs_grad):
    """The joint's inputs at a chunk: encoder frames (N, H), decoder rows (1 or N, n_u, H), the head's weight and bias;
    those flagged in needs_grad (4 bools) as fresh leaves that require grad."""
    inputs = [frames[chunk.frames], decoder_rows[chunk.decoder_rows], weight, bias]
    return [x.detach().requires_grad_() if need else x for x, need in zip(inputs, needs_grad)]


class _FusedJointTDTLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, encoder_states, decoder_states, weight, bias, activation, targets, logit_lengths,
                target_lengths, blank_token_id, durations, sigma, zero_infinity, chunk_size, windows):
        batch, max_t, hidden = encoder_states.shape
        max_u1, vocab_size = decoder_states.shape[1], weight.shape[0] - len(durations)
        label_ids = _label_ids(targets, target_lengths, blank_token_id)
        dtype = _compute_dtype(encoder_states.dtype)
        # states outside the windows (if any) keep log-weight -inf arcs: blank and label logits -inf
        statistics = encoder_states.new_zeros((3, batch, max_t, max_u1), dtype=dtype)
        if windows is not None:
            statistics[1:] = NEG_INF
        duration_logits = encoder_states.new_zeros((batch, max_t, max_u1, len(durations)), dtype=dtype)
        finite = torch.ones((batch, max_t, max_u1), dtype=torch.bool, device=encoder_states.device)
        frames, decoder_rows = encoder_states.reshape(-1, hidden), decoder_states.reshape(-1, hidden)

        def joint_at(b, t, u):  # (V+D,) one joint output, to name a non-finite logit
            encoder_frame, decoder_state = encoder_states[b, t : t + 1], decoder_states[b, u : u + 1]
            return _joint_logits(encoder_frame, decoder_state[None], weight, bias, activation)[0, 0]

        # a pruned joint is small: its chunks keep their graphs for backward; the whole joint's are recomputed
        keep, ctx.kept = windows is not None and any(ctx.needs_input_grad[:4]), []
        needs_grad = ctx.needs_input_grad[:4] if keep else (False,) * 4
        chunks = _joint_chunks(logit_lengths, target_lengths, (max_t, max_u1), chunk_size, windows)
        for chunk in chunks:
            inputs = _joint_inputs(frames, decoder_rows, weight, bias, chunk, needs_grad)
            with torch.enable_grad() if keep else contextlib.nullcontext():
                logits = _joint_logits(*inputs, activation)  # (N, n_u, V+D)
            if keep:
                ctx.kept.append((inputs, logits))
                logits = logits.detach()
            chunk_statistics = _token_statistics(logits[..., :vocab_size], label_ids.view(-1)[chunk.decoder_rows],
                                                 blank_token_id)
            for per_state, values in zip((*statistics, finite), chunk_statistics):
                per_state.view(-1)[chunk.states] = values.to(per_state.dtype)
            duration_logits.view(-1, len(durations))[chunk.states] = logits[..., vocab_size:].to(dtype)
        _check_finite("joint token logits", finite, lambda b, t, u: joint_at(b, t, u)[:vocab_size])
        log_normalizer, blank_logit, label_logit = statistics
        lattice, finite = _Lattice.from_statistics(log_normalizer, blank_logit, label_logit, duration_logits, sigma,
                                                   durations, logit_lengths, target_lengths)
        if windows is not None:
            lattice.rows = (windows.starts, windows.starts + windows.widths[:, None])
        _check_finite("joint duration logits", finite, lambda b, t, u: joint_at(b, t, u)[vocab_size:])
        losses, log_alpha, log_likelihood = _losses(lattice, zero_infinity)
        ctx.save_for_backward(encoder_states, decoder_states, weight, bias, log_normalizer, label_ids, log_alpha,
                              log_likelihood)
        ctx.lattice, ctx.activation, ctx.blank_token_id = lattice, activation, blank_token_id
        ctx.chunk_size, ctx.windows = chunk_size, windows
        device_type = encoder_states.device.type
        ctx.autocast = dict(device_type=device_type, dtype=torch.get_autocast_dtype(device_type),
                            enabled=torch.is_autocast_enabled(device_type))
        return losses.to(dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_losses):
        encoder_states, decoder_states, weight, bias, log_normalizer, label_ids, log_alpha, log_likelihood = (
            ctx.saved_tensors
        )
        lattice = ctx.lattice
        token_gradient, duration_grad = _state_gradients(
            lattice, log_normalizer, log_alpha, log_likelihood, grad_losses
        )
        n_durations, hidden = duration_grad.shape[-1], encoder_states.shape[-1]
        vocab_size = weight.shape[0] - n_durations
        needs = ctx.needs_input_grad[:4]
        parameters = (encoder_states, decoder_states, weight, bias)
        grads = [x.new_zeros(x.shape) if need else None for x, need in zip(parameters, needs)]  # contiguous
        frames, decoder_rows = encoder_states.reshape(-1, hidden), decoder_states.reshape(-1, hidden)
        chunks = _joint_chunks(lattice.logit_lengths, lattice.target_lengths, log_alpha.shape[1:], ctx.chunk_size,
                               ctx.windows, significant=None if ctx.kept else token_gradient.significant)
        kept = iter(ctx.kept)
        for chunk in chunks if any(needs) else ():
            if chunk.rows.shape[-1] == 0:
                continue
            if ctx.kept:
                inputs, logits = next(kept)
            else:
                inputs = _joint_inputs(frames, decoder_rows, weight, bias, chunk, needs)
                with torch.enable_grad(), torch.autocast(**ctx.autocast):  # recompute exactly as the forward did
                    logits = _joint_logits(*inputs, ctx.activation)  # (N, n_u, V+D)
            grad_logits = torch.empty_like(logits)
            _token_logits_grad(logits[..., :vocab_size].detach(), token_gradient.chunk(chunk.states, chunk.utterances),
                               label_ids.view(-1)[chunk.decoder_rows], ctx.blank_token_id,
                               out=grad_logits[..., :vocab_size])
            grad_logits[..., vocab_size:] = duration_grad.reshape(-1, n_durations)[chunk.states]
            chunk_grads = iter(torch.autograd.grad(logits, [x for x, need in zip(inputs, needs) if need], grad_logits))
            # each frame's and each decoder row's gradient summed into its own; the head's from every chunk
            for grad, rows, need in zip(grads, (chunk.frames, chunk.decoder_rows), needs):
                if need:
                    grad.view(-1, hidden).index_add_(0, rows.flatten(), next(chunk_grads).reshape(-1, hidden))
            for grad, need in zip(grads[2:], needs[2:]):
                if need:
                    grad += next(chunk_grads)
        return (*grads, *[None] * 10)


def fused_joint_tdt_loss(
    encoder_states: torch.Tensor,
    decoder_states: torch.Tensor,
    joint_head: nn.Linear,
    activation,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_token_id: int,
    durations: list[int],
    sigma: float = 0.0,
    reduction: str = "mean",
    zero_infinity: bool = False,
    chunk_size: int | None = None,
    windows: "LatticeWindows | None" = None,
) -> torch.Tensor:
    """`tdt_loss(joint[..., :V], joint[..., V:], ...)` with joint = joint_head(activation(enc[:, :, None] +
    dec[:, None])) computed `chunk_size` (t, u) positions at a time: the (B, T, U+1, V+D) joint is never materialised.

    Backward recomputes each chunk of the joint (under the forward's autocast state; only chunks holding states of
    non-negligible occupancy) and accumulates the gradients of encoder_states, decoder_states and the head's weight
    and bias; memory beyond them is O(chunk_size * (H + V + D) + B * T * (U+1) * D). With `windows` the joint exists
    at B * T * width positions only, and the forward's chunks are kept for backward instead of recomputed.

    Args:
        encoder_states: (B, T, H) encoder output, already projected to the joint size (encoder_projector).
        decoder_states: (B, U+1, H) prediction-network output, already projected (decoder_projector).
        joint_head: nn.Linear(H, V + D): the first V outputs are token logits (blank included), the last D durations.
        activation: a callable without trainable parameters (e.g. the joint's ACT2FN activation).
        chunk_size: (t, u) joint positions computed at once (rounded to whole frames); by default as many as fit
            JOINT_CHUNK_BYTES of float32 (H + V + D per position).
        windows: None for the exact loss over every state; `LatticeWindows` (from `lattice_windows`) for the pruned
            loss: the joint is computed at each frame's window of states only, and paths leave no window.
        The other arguments are those of `tdt_loss`.
    """
    _check_options(durations, reduction)
    if encoder_states.dim() != 3 or decoder_states.dim() != 3:
        raise ValueError(
            f"encoder_states must be (B, T, H) and decoder_states (B, U+1, H), got shapes "
            f"{tuple(encoder_states.shape)} and {tuple(decoder_states.shape)}."
        )
    batch, max_t, hidden = encoder_states.shape
    if decoder_states.shape[0] != batch or decoder_states.shape[2] != hidden or joint_head.in_features != hidden:
        raise ValueError(
            f"encoder_states {tuple(encoder_states.shape)}, decoder_states {tuple(decoder_states.shape)} and "
            f"joint_head.in_features={joint_head.in_features} must agree on B and H."
        )
    if joint_head.out_features <= len(durations):
        raise ValueError(
            f"joint_head has {joint_head.out_features} outputs: none left for tokens after {len(durations)} durations."
        )
    if isinstance(activation, nn.Module) and any(p.requires_grad for p in activation.parameters()):
        raise ValueError("activation has trainable parameters: the fused backward returns no gradient for them.")
    if chunk_size is None:
        chunk_size = max(1, JOINT_CHUNK_BYTES // (4 * (hidden + joint_head.out_features)))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    vocab_size = joint_head.out_features - len(durations)
    targets, logit_lengths, target_lengths = _check_alignment_inputs(
        targets, logit_lengths, target_lengths, blank_token_id, (batch, max_t, decoder_states.shape[1]), vocab_size
    )
    if windows is not None:
        _check_windows(windows, durations, logit_lengths, target_lengths, max_t)
    device = encoder_states.device
    losses = _FusedJointTDTLoss.apply(
        encoder_states, decoder_states, joint_head.weight, joint_head.bias, activation, targets.to(device),
        logit_lengths.to(device), target_lengths.to(device), blank_token_id, list(durations), float(sigma),
        zero_infinity, chunk_size, windows,
    )
    return _reduce(losses, target_lengths.to(device), reduction)


# ------------------------------------------------------------------------------------------------ pruned lattice


class LatticeWindows(NamedTuple):
    """A pruned TDT lattice: frame t of utterance b keeps the states u in [starts[b, t], starts[b, t] + widths[b])."""

    starts: torch.Tensor  # (B, T) long
    widths: torch.Tensor  # (B,) long


def lattice_windows(frame_logits, targets, logit_lengths, target_lengths, blank_token_id, width) -> LatticeWindows:
    """Windows of `width` states per frame where a CTC model puts the alignment (k2's pruned RNN-T idea, arXiv
    2206.13236, with the CTC head's posteriors in place of k2's trained "simple" joiner).

    CTC's forward-backward over the targets gives the posterior of each of its states at each frame; TDT state (t, u)
    (u labels emitted before frame t) gathers CTC's blank after label u and its label u + 1. Each frame's window is the
    one holding the most of that occupancy; then windows are made non-decreasing in u, start at (0, 0), end at
    (T_b - 1, U_b), and move at most width - 1 states a frame, so that a path through them always exists where the
    durations include 0 and 1. An utterance with U_b + 1 <= width, or more labels than frames (no CTC alignment), keeps
    every state.

    Args:
        frame_logits: (B, T, V) CTC logits or log-probabilities over the TDT vocabulary (blank included; the
            posteriors do not depend on a per-frame normaliser); no gradient.
        targets, logit_lengths, target_lengths, blank_token_id: as for `tdt_loss`.
        width: states kept per frame, >= 2.
    """
    if width < 2:
        raise ValueError(f"the pruning width must be >= 2 states per frame, got {width}.")
    frame_logits = frame_logits.detach().float()
    batch, max_t, vocab_size = frame_logits.shape
    targets, logit_lengths, target_lengths = _check_alignment_inputs(
        targets, logit_lengths, target_lengths, blank_token_id, (batch, max_t, targets.shape[1] + 1), vocab_size
    )
    widths = (target_lengths + 1).clamp(max=width)
    if targets.shape[1] + 1 <= width:  # every utterance fits one window
        return LatticeWindows(torch.zeros((batch, max_t), dtype=torch.long, device=widths.device), widths)
    occupancy = _ctc_state_occupancy(frame_logits, targets, logit_lengths, target_lengths, blank_token_id)
    max_start = target_lengths + 1 - widths  # (B,)
    cumulative = F.pad(occupancy.cumsum(-1), (1, 0))  # (B, T, U+2): window [s, s + w) holds c[s + w] - c[s]
    scores = cumulative[..., width:] - cumulative[..., :-width]  # (B, T, U+2-w): one per start
    starts = torch.arange(scores.shape[-1], device=scores.device)
    scores = scores.masked_fill(starts > max_start[:, None, None], NEG_INF)
    starts = _connected_starts(scores.argmax(-1), logit_lengths, max_start, width)
    whole = (widths < width) | (target_lengths > logit_lengths)  # the latter: CTC has no alignment to place them
    widths = torch.where(whole, target_lengths + 1, widths)
    return LatticeWindows(starts.masked_fill(whole[:, None], 0), widths)


def _ctc_state_occupancy(frame_logits, targets, logit_lengths, target_lengths, blank_token_id):
    """(B, T, U+1): the CTC posterior of having emitted u labels before frame t (at its blank after label u, or at its
    label u + 1), from torch's CTC forward on the utterances and on their time-reversed copies (whose forward variable
    is the backward one). 0 outside the utterances and where CTC has no alignment (fewer frames than labels).

    CTC reads only the blank's and the targets' scores, so both runs see those columns alone: (B, T, U+1) with the
    blank at 0 and target u at u + 1. The targets are then distinct, so CTC's blank between repeated labels is not
    required (a transducer needs none either)."""
    batch, max_t, _ = frame_logits.shape
    max_u, device = targets.shape[1], frame_logits.device
    columns = torch.cat([torch.full_like(targets[:, :1], blank_token_id), targets], 1)  # (B, U+1)
    compact = frame_logits.gather(2, columns[:, None].expand(-1, max_t, -1))  # (B, T, U+1)
    labels = torch.arange(1, max_u + 1, device=device).expand(batch, -1)  # (B, U): target u is column u + 1
    frames, n_states = torch.arange(max_t, device=device), 2 * max_u + 1  # CTC's states: blank, label 1, blank, ...
    states = torch.arange(n_states, device=device)
    reverse_frames = (logit_lengths[:, None] - 1 - frames).clamp(min=0)[..., None]  # (B, T, 1)
    reverse_states = (2 * target_lengths[:, None] - states).clamp(min=0)[:, None]  # (B, 1, S)

    def ctc_alpha(scores, frame_labels):  # (B, T, S): the log-weight of the prefixes ending in state s at frame t
        return torch.ops.aten._ctc_loss(scores.transpose(0, 1), frame_labels, logit_lengths, target_lengths, 0, False)

    negative_log_likelihood, alpha = ctc_alpha(compact, labels)
    reversed_compact = compact.gather(1, reverse_frames.expand(-1, -1, max_u + 1))
    beta = ctc_alpha(reversed_compact, (target_lengths[:, None] - labels + 1).clamp(min=1))[1]
    beta = beta.gather(1, reverse_frames.expand(-1, -1, n_states)).gather(2, reverse_states.expand(-1, max_t, -1))
    state_columns = torch.where(states % 2 == 1, (states + 1) // 2, 0)  # (S,): the column each CTC state reads
    emission = compact[..., state_columns]  # (B, T, S): counted in alpha and in beta
    posterior = (alpha + beta - emission + negative_log_likelihood[:, None, None]).exp()
    inside = (frames[None, :, None] < logit_lengths[:, None, None]) & (states <= 2 * target_lengths[:, None, None])
    posterior = posterior.masked_fill(~inside, 0.0).nan_to_num(0.0, posinf=0.0)
    return posterior[..., 0::2] + F.pad(posterior[..., 1::2], (0, 1))


def _connected_starts(starts, logit_lengths, max_start, width):
    """Window starts (B, T) made non-decreasing, 0 at t = 0, max_start at T_b - 1 and moving at most width - 1 a
    frame: s_t = min(s_t, s_(t-1) + w - 1) forward, then s_t = max(s_t, s_(t+1) - w + 1) backward, each a running
    min / max of s_j - j (w - 1)."""
    max_t = starts.shape[1]
    frames = torch.arange(max_t, device=starts.device)[None]  # (1, T)
    slope = frames * (width - 1)
    starts = starts.cummax(1).values
    starts[:, 0] = 0
    starts = slope + (starts - slope).cummin(1).values
    last = frames == (logit_lengths - 1)[:, None]
    starts = torch.where(last, torch.maximum(starts, max_start[:, None]), starts)
    past = frames >= logit_lengths[:, None]
    offset = (starts - slope).masked_fill(past, -(max_t * width))
    starts = slope + offset.flip(1).cummax(1).values.flip(1)
    return starts.clamp(min=0).minimum(max_start[:, None]).masked_fill(past, 0)


def _check_windows(windows, durations, logit_lengths, target_lengths, max_t):
    if not {0, 1} <= set(durations):
        raise ValueError(f"a pruned TDT loss needs durations 0 and 1 (paths within windows), got {list(durations)}.")
    starts, widths = windows
    if tuple(starts.shape) != (len(logit_lengths), max_t) or tuple(widths.shape) != (len(logit_lengths),):
        raise ValueError(f"windows must have starts (B, T) = ({len(logit_lengths)}, {max_t}) and widths (B,), got "
                         f"{tuple(starts.shape)} and {tuple(widths.shape)}.")
    frames = torch.arange(max_t, device=starts.device)[None] < logit_lengths[:, None]
    ends = starts + widths[:, None]
    bad = (frames & ((starts < 0) | (ends > (target_lengths + 1)[:, None]))).nonzero()
    if len(bad):
        b, t = bad[0].tolist()
        raise ValueError(f"window [{int(starts[b, t])}, {int(ends[b, t])}) of utterance {b}, frame {t} lies outside "
                         f"its states [0, {int(target_lengths[b]) + 1}).")
