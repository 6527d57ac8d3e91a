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
"""

import torch
import torch.nn.functional as F
from torch import nn


REDUCTIONS = ("mean_volume", "mean_batch", "mean", "sum", "none")
CHUNK_LOGITS = 1 << 18  # token logits read per chunk in tdt_loss: 1 MiB of float32, temporaries stay in cache
NEG_INF = float("-inf")


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
    for name, lengths, low, high in (("logit_lengths", logit_lengths, 1, max_t), ("target_lengths", target_lengths, 0, max_u1 - 1)):
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
    """Raise naming the first non-finite logit of the first row flagged False in `finite` (B, T, U+1);
    logits_at(b, t, u) returns that row of logits (V,)."""
    if bool(finite.all()):
        return
    index = (~finite).nonzero()[0].tolist()
    row = logits_at(*index)
    column = int((~torch.isfinite(row)).nonzero()[0])
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


def _frame_chunks(logit_lengths, target_lengths, positions_per_chunk):
    """Yield (b, t0, t1, n_u): the valid frames of utterance b cut so that (t1 - t0) * n_u ~ positions_per_chunk."""
    for b, (frames, labels) in enumerate(zip(logit_lengths.tolist(), target_lengths.tolist())):
        n_u = labels + 1
        step = max(1, positions_per_chunk // n_u)
        for t0 in range(0, frames, step):
            yield b, t0, min(t0 + step, frames), n_u


# ------------------------------------------------------------------------------------------- token statistics


def _compute_dtype(dtype):
    """Half-precision logits are reduced in float32; float32 and float64 in their own precision."""
    return torch.promote_types(dtype, torch.float32)


def _token_statistics(token_logits, label_ids, blank_token_id):
    """Per (t, u) statistics of a chunk of token logits (nt, n_u, V) and the labels (n_u,) emitted from each u.

    Returns (nt, n_u) tensors, at least float32: log-normaliser, blank logit, label logit, whether the row is finite.
    """
    dtype = _compute_dtype(token_logits.dtype)
    low, high = torch.aminmax(token_logits, dim=-1)
    high = high.to(dtype)
    log_normalizer = torch.sub(token_logits, high[..., None]).exp_().sum(-1).log_().add_(high)
    finite = torch.isfinite(low) & torch.isfinite(high)
    blank = token_logits[..., blank_token_id].to(dtype)
    label = token_logits.gather(-1, label_ids.expand(token_logits.shape[0], -1)[..., None])[..., 0].to(dtype)
    return log_normalizer, blank, label, finite


def _token_logits_grad(token_logits, log_normalizer, occupancy, blank_occupancy, label_occupancy, label_ids,
                       blank_token_id, out):
    """Write d loss / d token_logits of a chunk into `out` (nt, n_u, V): softmax * occupancy minus the arc occupancies
    at the blank and label ids. Occupancies are (nt, n_u), already scaled by the incoming gradient."""
    dtype = _compute_dtype(out.dtype)
    work = out if out.dtype == dtype else torch.empty(out.shape, dtype=dtype, device=out.device)
    torch.sub(token_logits, log_normalizer[..., None], out=work)
    work.exp_().mul_(occupancy[..., None])
    work[..., blank_token_id] -= blank_occupancy
    work.scatter_add_(-1, label_ids.expand(work.shape[0], -1)[..., None], -label_occupancy[..., None])
    if work is not out:
        out.copy_(work)


# -------------------------------------------------------------------------------------------------- the lattice


class _Lattice:
    """The arc log-weights of a batch of TDT lattices and the forward-backward over them (float64).

    blank_log_probs, label_log_probs: (B, T, U+1) token log-probs (sigma subtracted) of blank and of target u;
    duration_log_probs: (B, T, U+1, D). States outside each utterance must hold finite values (they are ignored).
    """

    def __init__(self, blank_log_probs, label_log_probs, duration_log_probs, durations, logit_lengths, target_lengths):
        device = duration_log_probs.device
        self.durations = torch.tensor(durations, device=device)
        self.positive = (self.durations > 0).nonzero()[:, 0]  # indices j with d_j > 0
        self.steps = self.durations[self.positive]  # (D+,)
        self.max_step = max(durations)
        self.has_zero = 0 in durations
        self.logit_lengths, self.target_lengths = logit_lengths, target_lengths
        self.duration_log_probs = duration_log_probs
        self.blank = (blank_log_probs[..., None] + duration_log_probs).masked_fill(self.durations == 0, NEG_INF)
        self.label = label_log_probs[..., None] + duration_log_probs  # (B, T, U+1, D)
        self.label[:, :, -1] = NEG_INF  # nothing left to emit after the last target
        self.final = self._final_log_weights()
        if self.has_zero:
            # zero-duration label arcs (t, u) -> (t, u + 1); W[..., u] is their summed weight from u' = 0 to u
            label_in_place = self.label[..., self.durations == 0].logsumexp(-1)  # (B, T, U+1)
            self.in_place_cumsum = F.pad(label_in_place[..., :-1].cumsum(-1), (1, 0))

    def _final_log_weights(self):
        """(B, T, U+1): log-weight of ending the utterance from each state (blank arcs landing exactly on T_b)."""
        batch, max_t, max_u1, _ = self.blank.shape
        final = self.blank.new_full((batch, max_t, max_u1), NEG_INF)
        rows = torch.arange(batch, device=final.device)
        for j, step in zip(self.positive.tolist(), self.steps.tolist()):
            start = self.logit_lengths - step  # (B,)
            ok = start >= 0
            b, t, u = rows[ok], start[ok], self.target_lengths[ok]
            final[b, t, u] = torch.logaddexp(final[b, t, u], self.blank[b, t, u, j])
        return final

    def _arcs_by_step(self, weights):
        """(B, T, U+1, D) -> (B, T, D+, U+1): the positive-duration arcs, contiguous per frame."""
        return weights[..., self.positive].permute(0, 1, 3, 2)

    def log_alpha(self):
        """(B, T, U+1): log-weight of all partial paths from (0, 0) to each state."""
        batch, max_t, max_u1, _ = self.blank.shape
        pad, steps = self.max_step, torch.arange(len(self.steps), device=self.blank.device)
        sources = torch.arange(max_t, device=self.blank.device)[:, None] + pad - self.steps  # (T, D+) padded rows
        # arcs entering (t, u) from frame t - d: blank from (t - d, u), label from (t - d, u - 1)
        blank_in = F.pad(self._arcs_by_step(self.blank), (0, 0, 0, 0, pad, 0), value=NEG_INF)
        label_in = F.pad(self._arcs_by_step(self.label), (1, 0, 0, 0, pad, 0), value=NEG_INF)[..., :-1]
        entering = torch.cat([blank_in[:, sources, steps], label_in[:, sources, steps]], dim=2)  # (B, T, 2 D+, U+1)
        alpha = self.blank.new_full((batch, pad + max_t, max_u1 + 1), NEG_INF)  # pad frames before 0, a column before 0
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
        batch, max_t, max_u1, _ = self.blank.shape
        # arcs leaving (t, u) to frame t + d: blank to (t + d, u), label to (t + d, u + 1)
        leaving = torch.cat([self._arcs_by_step(self.blank), self._arcs_by_step(self.label)], dim=2)  # (B, T, 2 D+, U+1)
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


def _lattice_from_statistics(log_normalizer, blank_logit, label_logit, duration_logits, valid, sigma, durations,
                             logit_lengths, target_lengths):
    """Build the float64 lattice from per-state statistics (B, T, U+1) and duration logits (B, T, U+1, D)."""
    duration_logits = duration_logits.double().masked_fill(~valid[..., None], 0.0)
    lattice = _Lattice(
        blank_logit.double() - log_normalizer.double() - sigma,
        label_logit.double() - log_normalizer.double() - sigma,
        duration_logits.log_softmax(-1),
        durations,
        logit_lengths,
        target_lengths,
    )
    lattice.statistics_dtype = log_normalizer.dtype
    return lattice


def _losses(lattice, zero_infinity):
    """Per-utterance losses (B,) and the alpha recursion they came from."""
    log_alpha = lattice.log_alpha()
    log_likelihood = lattice.log_likelihood(log_alpha)
    losses = -log_likelihood
    if zero_infinity:
        losses = torch.where(torch.isinf(losses), 0.0, losses)
    return losses, log_alpha, log_likelihood


def _state_gradients(lattice, log_alpha, log_likelihood, grad_losses):
    """d loss / d logits of the lattice: per-state occupancies (B, T, U+1) for the token logits (total, blank, label)
    and the full gradient of the duration logits (B, T, U+1, D), all scaled by grad_losses (B,)."""
    blank, label = lattice.occupancies(log_alpha, lattice.log_beta(), log_likelihood, grad_losses)
    blank_occupancy, label_occupancy = blank.sum(-1), label.sum(-1)
    occupancy = blank_occupancy + label_occupancy
    duration_grad = lattice.duration_log_probs.exp() * occupancy[..., None] - (blank + label)
    dtype = lattice.statistics_dtype
    return (occupancy.to(dtype), blank_occupancy.to(dtype), label_occupancy.to(dtype)), duration_grad


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
        statistics = token_logits.new_zeros((3, batch, max_t, max_u1), dtype=dtype)
        finite = torch.ones((batch, max_t, max_u1), dtype=torch.bool, device=token_logits.device)
        for b, t0, t1, n_u in _frame_chunks(logit_lengths, target_lengths, CHUNK_LOGITS // token_logits.shape[-1]):
            *chunk_statistics, finite[b, t0:t1, :n_u] = _token_statistics(
                token_logits[b, t0:t1, :n_u], label_ids[b, :n_u], blank_token_id
            )
            statistics[:3, b, t0:t1, :n_u] = torch.stack(chunk_statistics)
        _check_finite("token_logits", finite, lambda b, t, u: token_logits[b, t, u])
        valid = _valid_states(logit_lengths, target_lengths, max_t, max_u1)
        _check_finite("duration_logits", torch.isfinite(duration_logits).all(-1) | ~valid,
                      lambda b, t, u: duration_logits[b, t, u])
        log_normalizer, blank_logit, label_logit = statistics
        lattice = _lattice_from_statistics(log_normalizer, blank_logit, label_logit, duration_logits, valid, sigma,
                                           durations, logit_lengths, target_lengths)
        losses, log_alpha, log_likelihood = _losses(lattice, zero_infinity)
        ctx.save_for_backward(token_logits, log_normalizer, label_ids, log_alpha, log_likelihood)
        ctx.lattice, ctx.blank_token_id = lattice, blank_token_id
        return losses.to(dtype)

    @staticmethod
    def backward(ctx, grad_losses):
        token_logits, log_normalizer, label_ids, log_alpha, log_likelihood = ctx.saved_tensors
        lattice = ctx.lattice
        occupancies, duration_grad = _state_gradients(lattice, log_alpha, log_likelihood, grad_losses)
        token_grad = None
        if ctx.needs_input_grad[0]:
            token_grad = torch.empty(token_logits.shape, dtype=token_logits.dtype, device=token_logits.device)
            for b, (frames, labels) in enumerate(zip(lattice.logit_lengths.tolist(), lattice.target_lengths.tolist())):
                token_grad[b, frames:].zero_()
                token_grad[b, :frames, labels + 1 :].zero_()
            chunks = _frame_chunks(lattice.logit_lengths, lattice.target_lengths, CHUNK_LOGITS // token_logits.shape[-1])
            for b, t0, t1, n_u in chunks:
                state = (b, slice(t0, t1), slice(0, n_u))
                _token_logits_grad(
                    token_logits[state], log_normalizer[state], *(o[state] for o in occupancies), label_ids[b, :n_u],
                    ctx.blank_token_id, out=token_grad[state],
                )
        duration_grad = duration_grad.to(token_logits.dtype) if ctx.needs_input_grad[1] else None
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
        The reduced loss (float32 for float32 logits), or (B,) per-utterance losses with reduction="none".
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
    """(nt, H), (n_u, H) -> (nt, n_u, V+D): head(activation(enc + dec)), as ParakeetTDTJointNetwork computes it."""
    return F.linear(activation(encoder_states[:, None] + decoder_states[None]), weight, bias)


class _FusedJointTDTLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, encoder_states, decoder_states, weight, bias, activation, targets, logit_lengths,
                target_lengths, blank_token_id, durations, sigma, zero_infinity, chunk_size):
        batch, max_t, _ = encoder_states.shape
        max_u1, vocab_size = decoder_states.shape[1], weight.shape[0] - len(durations)
        label_ids = _label_ids(targets, target_lengths, blank_token_id)
        dtype = _compute_dtype(encoder_states.dtype)
        statistics = encoder_states.new_zeros((3, batch, max_t, max_u1), dtype=dtype)
        duration_logits = encoder_states.new_zeros((batch, max_t, max_u1, len(durations)), dtype=dtype)
        finite = torch.ones((batch, max_t, max_u1), dtype=torch.bool, device=encoder_states.device)

        def joint_at(b, t, u):  # (V+D,) one joint output, to name a non-finite logit
            return _joint_logits(encoder_states[b, t : t + 1], decoder_states[b, u : u + 1], weight, bias, activation)[0, 0]

        for b, t0, t1, n_u in _frame_chunks(logit_lengths, target_lengths, chunk_size):
            logits = _joint_logits(encoder_states[b, t0:t1], decoder_states[b, :n_u], weight, bias, activation)
            *chunk_statistics, finite[b, t0:t1, :n_u] = _token_statistics(
                logits[..., :vocab_size], label_ids[b, :n_u], blank_token_id
            )
            statistics[:3, b, t0:t1, :n_u] = torch.stack(chunk_statistics)
            duration_logits[b, t0:t1, :n_u] = logits[..., vocab_size:]
        _check_finite("joint token logits", finite, lambda b, t, u: joint_at(b, t, u)[:vocab_size])
        _check_finite("joint duration logits", torch.isfinite(duration_logits).all(-1),
                      lambda b, t, u: joint_at(b, t, u)[vocab_size:])
        valid = _valid_states(logit_lengths, target_lengths, max_t, max_u1)
        log_normalizer, blank_logit, label_logit = statistics
        lattice = _lattice_from_statistics(log_normalizer, blank_logit, label_logit, duration_logits, valid, sigma,
                                           durations, logit_lengths, target_lengths)
        losses, log_alpha, log_likelihood = _losses(lattice, zero_infinity)
        ctx.save_for_backward(encoder_states, decoder_states, weight, bias, log_normalizer, label_ids, log_alpha,
                              log_likelihood)
        ctx.lattice, ctx.activation, ctx.blank_token_id, ctx.chunk_size = lattice, activation, blank_token_id, chunk_size
        return losses.to(dtype)

    @staticmethod
    def backward(ctx, grad_losses):
        encoder_states, decoder_states, weight, bias, log_normalizer, label_ids, log_alpha, log_likelihood = (
            ctx.saved_tensors
        )
        lattice = ctx.lattice
        occupancies, duration_grad = _state_gradients(lattice, log_alpha, log_likelihood, grad_losses)
        vocab_size = weight.shape[0] - duration_grad.shape[-1]
        needs = ctx.needs_input_grad[:4]
        grads = [torch.zeros_like(x) if need else None for x, need in zip((encoder_states, decoder_states, weight, bias), needs)]
        if not any(needs):
            return (*grads, *[None] * 9)
        for b, t0, t1, n_u in _frame_chunks(lattice.logit_lengths, lattice.target_lengths, ctx.chunk_size):
            state = (b, slice(t0, t1), slice(0, n_u))
            inputs = [encoder_states[b, t0:t1], decoder_states[b, :n_u], weight, bias]
            inputs = [x.detach().requires_grad_(need) if need else x for x, need in zip(inputs, needs)]
            with torch.enable_grad():
                logits = _joint_logits(*inputs, ctx.activation)  # (nt, n_u, V+D)
            grad_logits = torch.empty_like(logits)
            _token_logits_grad(
                logits[..., :vocab_size].detach(), log_normalizer[state], *(o[state] for o in occupancies),
                label_ids[b, :n_u], ctx.blank_token_id, out=grad_logits[..., :vocab_size],
            )
            grad_logits[..., vocab_size:] = duration_grad[state]
            chunk_grads = iter(torch.autograd.grad(logits, [x for x, need in zip(inputs, needs) if need], grad_logits))
            for grad, region, need in zip(grads, (state[:2], state[::2], ..., ...), needs):
                if need:
                    grad[region] += next(chunk_grads)
        return (*grads, *[None] * 9)


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
    chunk_size: int = 1024,
) -> torch.Tensor:
    """`tdt_loss(joint[..., :V], joint[..., V:], ...)` with joint = joint_head(activation(enc[:, :, None] + dec[:, None]))
    computed `chunk_size` (t, u) positions at a time, so the (B, T, U+1, V+D) joint output is never materialised.

    Backward recomputes each chunk of the joint and accumulates the gradients of encoder_states, decoder_states and
    the head's weight and bias; memory beyond them is O(chunk_size * (H + V + D) + B * T * (U+1) * D).

    Args:
        encoder_states: (B, T, H) encoder output, already projected to the joint size (encoder_projector).
        decoder_states: (B, U+1, H) prediction-network output, already projected (decoder_projector).
        joint_head: nn.Linear(H, V + D): the first V outputs are token logits (blank included), the last D durations.
        activation: a parameter-free callable (e.g. the joint's ACT2FN activation).
        chunk_size: (t, u) joint positions computed at once (rounded to whole frames).
        The other arguments are those of `tdt_loss`.
    """
    _check_options(durations, reduction)
    if encoder_states.dim() != 3 or decoder_states.dim() != 3:
        raise ValueError(
            f"encoder_states must be (B, T, H) and decoder_states (B, U+1, H), got shapes {tuple(encoder_states.shape)} "
            f"and {tuple(decoder_states.shape)}."
        )
    batch, max_t, hidden = encoder_states.shape
    if decoder_states.shape[0] != batch or decoder_states.shape[2] != hidden or joint_head.in_features != hidden:
        raise ValueError(
            f"encoder_states {tuple(encoder_states.shape)}, decoder_states {tuple(decoder_states.shape)} and "
            f"joint_head.in_features={joint_head.in_features} must agree on B and H."
        )
    if joint_head.out_features <= len(durations):
        raise ValueError(f"joint_head has {joint_head.out_features} outputs: none left for tokens after {len(durations)} durations.")
    if isinstance(activation, nn.Module) and any(True for _ in activation.parameters()):
        raise ValueError("activation must be parameter-free: the fused backward returns no gradient for its parameters.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    vocab_size = joint_head.out_features - len(durations)
    targets, logit_lengths, target_lengths = _check_alignment_inputs(
        targets, logit_lengths, target_lengths, blank_token_id, (batch, max_t, decoder_states.shape[1]), vocab_size
    )
    device = encoder_states.device
    losses = _FusedJointTDTLoss.apply(
        encoder_states, decoder_states, joint_head.weight, joint_head.bias, activation, targets.to(device),
        logit_lengths.to(device), target_lengths.to(device), blank_token_id, list(durations), float(sigma),
        zero_infinity, chunk_size,
    )
    return _reduce(losses, target_lengths.to(device), reduction)
