"""The model family: shapes and masks, heads, round trips, Auto classes, remote code, export, bad input."""

import copy
import importlib
import re

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig, AutoModel, AutoModelForCTC, AutoModelForPreTraining, LogitsProcessor

from avalign.modeling import (
    FastConformerAlignmentConfig,
    FastConformerConfig,
    FastConformerCTCTDTConfig,
    FastConformerForCTCTDT,
    FastConformerForImageAlignment,
    FastConformerForMaskedTokenPrediction,
    FastConformerMaskedTokenPredictionConfig,
    FastConformerModel,
    spec_augment,
)
from avalign.modeling.tdt_loss import lattice_windows

modeling_fastconformer = importlib.import_module("avalign.modeling.modeling_fastconformer")

ENCODER = FastConformerConfig.from_preset("tiny", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
VOCAB = 12  # 11 tokens + blank (id 11)


def make_head(kind: str, **overrides):
    encoder = ENCODER.to_dict()
    if kind == "mtp":
        settings = {"codebook_size": 32, "mask_block_size": 8, **overrides}
        return FastConformerForMaskedTokenPrediction(
            FastConformerMaskedTokenPredictionConfig(encoder_config=encoder, **settings)
        )
    if kind == "align":
        return FastConformerForImageAlignment(
            FastConformerAlignmentConfig(encoder_config=encoder, image_embedding_dim=24, **overrides)
        )
    return FastConformerForCTCTDT(
        FastConformerCTCTDTConfig(encoder_config=encoder, vocab_size=VOCAB, decoder_hidden_size=24, **overrides)
    )


def padded_batch(lengths=(64, 41, 23), seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), 80, generator=generator)
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    return features * mask[..., None], mask.long()


# ---------------------------------------------------------------------------------------------- shapes and masks
def test_encoder_shapes_lengths_and_hidden_states():
    model = FastConformerModel(ENCODER).eval()
    features, mask = padded_batch()
    out = model(features, attention_mask=mask, output_hidden_states=True)
    assert out.last_hidden_state.shape == (3, 8, ENCODER.hidden_size)
    assert out.encoder_lengths.tolist() == [8, 6, 3]  # ceil(T / 8)
    assert out.attention_mask.sum(-1).tolist() == [8, 6, 3]
    assert len(out.hidden_states) == ENCODER.num_hidden_layers + 1


def _unpadded(model_call, features, mask, row):
    length = int(mask[row].sum())
    return model_call(features[row : row + 1, :length], mask[row : row + 1, :length])


@pytest.mark.parametrize("kind", ["encoder", "align", "ctc_tdt"])
def test_padding_does_not_change_outputs_of_shorter_items(kind):
    torch.manual_seed(0)
    features, mask = padded_batch()
    if kind == "encoder":
        model = FastConformerModel(ENCODER).eval()
        call = lambda x, m: model(x, attention_mask=m).last_hidden_state  # noqa: E731
    elif kind == "align":
        model = make_head("align").eval()
        call = lambda x, m: model(x, m).audio_embeds  # noqa: E731
    else:
        model = make_head("ctc_tdt").eval()
        call = lambda x, m: model(x, m).ctc_logits  # noqa: E731
    batched = call(features, mask)
    for row in (1, 2):
        alone = _unpadded(call, features, mask, row)
        torch.testing.assert_close(batched[row, : alone.shape[1]] if alone.ndim == 3 else batched[row], alone[0],
                                   atol=1e-5, rtol=1e-4)


def test_the_channels_last_subsampling_computes_parakeets_outputs_and_gradients():
    from transformers.models.parakeet.modeling_parakeet import ParakeetEncoderSubsamplingConv2D

    torch.manual_seed(0)
    ours = FastConformerModel(ENCODER).subsampling
    stock = ParakeetEncoderSubsamplingConv2D(FastConformerModel(ENCODER).to_parakeet_config())
    stock.load_state_dict(ours.state_dict())
    features, mask = padded_batch()
    results = []
    for module in (ours, stock):
        module.zero_grad()
        inputs = features.clone().requires_grad_()
        outputs = module(inputs, mask.long())
        outputs.square().sum().backward()
        results.append((outputs, inputs.grad, module.layers[0].weight.grad, module.layers[2].weight.grad))
    for mine, theirs in zip(*results):  # float32 sums in another order: agreement to ~1e-6 of each tensor's scale
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5 * theirs.abs().max().item())


def test_the_strided_shift_attention_computes_parakeets_attention_and_gradients():
    from transformers.models.parakeet.modeling_parakeet import ParakeetEncoderAttention

    torch.manual_seed(0)
    encoder = FastConformerModel(ENCODER)
    ours = encoder.layers[0].self_attn
    stock = ParakeetEncoderAttention(encoder.config, layer_idx=0)
    stock.load_state_dict(ours.state_dict())
    with torch.no_grad():
        for bias in (ours.bias_u, ours.bias_v, stock.bias_u, stock.bias_v):  # nonzero, as after training
            bias.copy_(torch.arange(bias.numel()).reshape(bias.shape) * 0.01)
    hidden = torch.randn(2, 9, ENCODER.hidden_size)
    positions = encoder.encode_positions(hidden)  # (B, 2T - 1, D)
    mask = (torch.arange(9) < torch.tensor([9, 5])[:, None])[:, None, None, :].expand(2, 1, 9, 9)
    results = []
    for module in (ours, stock):
        module.zero_grad()
        inputs = hidden.clone().requires_grad_()
        output, _ = module(inputs, positions, attention_mask=mask)
        output.square().sum().backward()
        results.append((output, inputs.grad, module.relative_k_proj.weight.grad, module.bias_v.grad))
    for mine, theirs in zip(*results):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_tdt_decoding_is_batch_invariant():
    torch.manual_seed(1)
    model = make_head("ctc_tdt").eval()
    features, mask = padded_batch()
    batched = model.transcribe(features, mask)
    for row in range(3):
        length = int(mask[row].sum())
        alone = model.transcribe(features[row : row + 1, :length])
        assert alone.sequences[0] == batched.sequences[row]
        assert alone.frame_timestamps[0] == batched.frame_timestamps[row]


@pytest.mark.parametrize("layers", [1, 2])
@torch.no_grad()
def test_greedy_step_weights_compute_the_prediction_network_and_joint(layers):
    from avalign.modeling.modeling_fastconformer import _GreedyStepWeights

    torch.manual_seed(0)
    model = make_head("ctc_tdt", num_decoder_layers=layers).eval()
    weights = _GreedyStepWeights.for_model(model)
    tokens = torch.tensor([3, 0, VOCAB - 1, 5])
    state = tuple(torch.randn(layers, 4, 24) for _ in range(2))
    decoder_state, (hidden, cell) = weights.prediction_step(tokens, state)
    expected, (expected_hidden, expected_cell) = model.prediction_network(tokens[:, None], state)
    torch.testing.assert_close(decoder_state, expected[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hidden, expected_hidden, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cell, expected_cell, rtol=1e-5, atol=1e-6)
    frames = torch.randn(4, 24)
    torch.testing.assert_close(weights.joint(frames, decoder_state), model.joint(decoder_state, frames),
                               rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_greedy_step_weights_follow_the_models_weights():
    from avalign.modeling.modeling_fastconformer import _GreedyStepWeights

    model = make_head("ctc_tdt").eval()
    weights = _GreedyStepWeights.for_model(model)
    assert _GreedyStepWeights.for_model(model) is weights  # unchanged weights: built once
    model.joint.head.bias.add_(1.0)  # an optimiser step changes weights in place
    changed = _GreedyStepWeights.for_model(model)
    assert changed is not weights
    torch.testing.assert_close(changed.head.bias, model.joint.head.bias)
    model.load_state_dict({k: torch.zeros_like(v) for k, v in model.state_dict().items()})
    assert _GreedyStepWeights.for_model(model).token_gates.abs().sum() == 0
    copied = copy.deepcopy(model)  # the cache (oneDNN's packed weights cannot be copied) stays outside the model
    assert _GreedyStepWeights.for_model(copied) is not _GreedyStepWeights.for_model(model)


@torch.no_grad()
@pytest.mark.parametrize("packed", [True, False])
def test_few_row_products_are_the_linear_layer_in_either_layout(monkeypatch, packed):
    from avalign.modeling.modeling_fastconformer import _FewRowLinear

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: packed)  # False: the (in, out) addmm path
    linear = torch.nn.Linear(24, 40)
    for bias in (linear.bias, None):
        product = _FewRowLinear(linear.weight, bias)
        assert (product.packed is not None) == packed
        for rows in (1, 5, 16):
            x = torch.randn(rows, 24)
            expected = torch.nn.functional.linear(x, linear.weight, bias)
            torch.testing.assert_close(product(x), expected, rtol=1e-5, atol=1e-5)


# mostly labels, often of duration 0 (runs hit max_symbols_per_step), or mostly blanks (skips of 1-4 frames)
@pytest.mark.parametrize("blank_bias, zero_duration_bias", [(0.0, 3.0), (6.0, 0.0)])
@pytest.mark.parametrize("batch_size", [1, 5])
@torch.no_grad()
def test_compiled_greedy_decoding_equals_the_torch_loop(monkeypatch, blank_bias, zero_duration_bias, batch_size):
    from avalign.modeling import tdt_kernels

    tdt_kernels.kernel_library.cache_clear()
    if tdt_kernels.kernel_library() is None:
        pytest.skip(f"compiled kernels unavailable: {tdt_kernels.kernel_build_info.get('disabled')}")
    torch.manual_seed(batch_size)
    model = make_head("ctc_tdt", max_symbols_per_step=3).eval()
    model.joint.head.weight.normal_(0.0, 1.0)  # so that the joint's inputs, not its bias, decide
    model.joint.head.bias[VOCAB - 1] += blank_bias
    model.joint.head.bias[VOCAB] += zero_duration_bias  # the first duration logit: duration 0
    states = torch.randn(batch_size, 40, 24)
    lengths = torch.tensor([40, 17, 1, 33, 29][:batch_size])
    compiled = model.tdt_greedy_decode(states, lengths)
    monkeypatch.setenv("AVALIGN_TDT_KERNELS", "0")
    tdt_kernels.kernel_library.cache_clear()
    reference = model.tdt_greedy_decode(states, lengths)
    tdt_kernels.kernel_library.cache_clear()
    assert compiled.sequences == reference.sequences and any(compiled.sequences)
    assert compiled.frame_timestamps == reference.frame_timestamps
    assert compiled.token_durations == reference.token_durations
    assert torch.equal(compiled.joint_evaluations, reference.joint_evaluations)
    if zero_duration_bias:  # duration-0 labels ran into max_symbols_per_step somewhere
        assert max(max((row.count(t) for t in set(row)), default=0) for row in compiled.frame_timestamps) == 3


@pytest.mark.parametrize("lengths", [[41, 3], [-1, 3], [3]])
def test_greedy_decoding_rejects_lengths_past_the_encoder_states(lengths):
    model = make_head("ctc_tdt").eval()
    with pytest.raises(ValueError, match=r"encoder_lengths must hold one length in \[0, 40\]"):
        model.tdt_greedy_decode(torch.randn(2, 40, 24), torch.tensor(lengths))


# ------------------------------------------------------------------------------------------------------ SpecAugment
def test_spec_augment_masks_bands_and_spans_inside_real_frames_only():
    features, mask = padded_batch(lengths=(200, 120, 50))
    features = features + 5.0 * mask[..., None]  # no real value is 0 before masking
    out = spec_augment(features, mask.bool(), freq_masks=2, freq_width=27, time_masks=10, time_width=0.05,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.shape == features.shape
    masked = (out == 0) & (features != 0)
    assert not masked[~mask.bool()].any() and torch.equal(out[~mask.bool()], features[~mask.bool()])
    assert masked.any(dim=(1, 2)).all()  # every utterance is augmented
    time_only = masked.all(-1)  # whole frames masked: the time spans
    for row, length in enumerate((200, 120, 50)):
        spans = time_only[row].long().diff(prepend=torch.zeros(1, dtype=torch.long)).eq(1).sum().item()
        assert spans <= 10 and time_only[row].sum() <= 10 * max(1, int(0.05 * length))
    bands = masked[0, :200].all(0)  # whole bins masked over the utterance: the frequency bands
    assert 0 < bands.sum() <= 2 * 27


def test_spec_augment_is_seeded_and_follows_the_config_in_training_only():
    features, mask = padded_batch()
    def draw(seed):
        return spec_augment(features, mask.bool(), 2, 10, 4, 0.1, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))

    augmented = ENCODER.to_dict() | {"spec_augment_freq_masks": 2, "spec_augment_time_masks": 4}
    model = FastConformerModel(FastConformerConfig(**augmented))
    plain = FastConformerModel(ENCODER)
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    torch.testing.assert_close(model(features, mask).last_hidden_state, plain(features, mask).last_hidden_state)
    model.train(), plain.train()
    torch.manual_seed(0)
    augmented_out = model(features, mask).last_hidden_state
    torch.manual_seed(0)
    assert not torch.allclose(augmented_out, plain(features, mask).last_hidden_state)
    torch.manual_seed(0)
    torch.testing.assert_close(model(features, mask).last_hidden_state, augmented_out)  # the global RNG seeds it


# -------------------------------------------------------------------------------------------------------- heads
def test_masked_token_prediction_loss_only_on_masked_real_frames():
    torch.manual_seed(0)
    model = make_head("mtp").train()
    features, mask = padded_batch()
    out = model(features, mask)
    assert out.logits.shape == (3, 8, 1, 32) and out.targets.shape == (3, 8, 1)
    assert out.mask.any(-1).all(), "every utterance has at least one masked frame"
    encoder_mask = torch.arange(8)[None] < out.encoder_lengths[:, None]
    assert not (out.mask & ~encoder_mask).any(), "padding frames never enter the loss"
    logits = out.logits
    logits.retain_grad()
    out.loss.backward()
    assert logits.grad[~out.mask].abs().max() == 0 and logits.grad[out.mask].abs().max() > 0
    # targets come from the clean input: they do not depend on the mask drawn
    again = model(features, mask)
    assert torch.equal(again.targets, out.targets)


def test_quantizer_is_frozen_and_deterministic():
    first, second = make_head("mtp"), make_head("mtp")
    assert torch.equal(first.quantizer.codebooks, second.quantizer.codebooks)
    assert not any(name.startswith("quantizer") for name, _ in first.named_parameters())


def test_kmeans_quantizer_finds_the_clusters_and_is_saved_with_the_model(tmp_path):
    model = make_head("mtp", codebook_size=4, quantizer="kmeans", num_codebooks=2)
    generator = torch.Generator().manual_seed(0)
    width = ENCODER.num_mel_bins * ENCODER.subsampling_factor
    centres = 5 * torch.randn(4, width, generator=generator)
    cluster = torch.arange(400) % 4
    model.quantizer.fit(centres[cluster] + torch.randn(400, width, generator=generator))
    codes = model.quantizer((centres[cluster] + torch.randn(400, width, generator=generator)).reshape(4, 100, width))
    codes = codes.reshape(400, 2)
    for book in range(2):  # each true cluster gets one code of its own, in both codebooks
        assert [len(codes[cluster == k, book].unique()) for k in range(4)] == [1, 1, 1, 1]
        assert len(codes[:, book].unique()) == 4
    model.save_pretrained(tmp_path)
    loaded = FastConformerForMaskedTokenPrediction.from_pretrained(tmp_path)
    assert loaded.config.quantizer == "kmeans" and torch.equal(loaded.quantizer.codebooks, model.quantizer.codebooks)


def test_a_fresh_encoder_keeps_the_scale_of_its_input():
    # transformers' N(0, 0.02) shrank unit-variance log-mels to std ~3e-4 by the end of the subsampling
    torch.manual_seed(0)
    encoder = FastConformerModel(FastConformerConfig.from_preset("demo"))
    features, mask = padded_batch(lengths=(400, 300))
    subsampled = encoder.subsampling(features / features[mask.bool()].std(), mask)
    assert 0.3 < subsampled.std() < 3.0


@pytest.mark.parametrize("loss", ["cosine", "infonce", "siglip"])
@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_alignment_losses_learn_and_respect_shared_images(loss, pooling):
    torch.manual_seed(0)
    model = make_head("align", alignment_loss=loss, pooling=pooling).train()
    features, mask = padded_batch()
    images = torch.randn(3, 24)
    out = model(features, mask, image_embeddings=images)
    assert out.audio_embeds.shape == (3, 24)
    torch.testing.assert_close(out.audio_embeds.norm(dim=-1), torch.ones(3))
    assert out.logits_per_audio.shape == (3, 3) and torch.isfinite(out.loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        step = model(features, mask, image_embeddings=images)
        step.loss.backward()
        optimizer.step()
        losses.append(step.loss.item())
    assert losses[-1] < max(losses[:2])  # down from where it started (a random start can be lucky once)
    if loss == "siglip":  # rows 0 and 1 share an image: their cross pairs count as positives, not negatives
        groups = torch.tensor([0, 0, 2])
        shared = model(features, mask, image_embeddings=images[groups], image_groups=groups)
        signs = torch.tensor([[1.0, 1, -1], [1, 1, -1], [-1, -1, 1]])
        expected = -torch.nn.functional.logsigmoid(signs * shared.logits_per_audio).sum() / 3
        torch.testing.assert_close(shared.loss, expected)
        assert not torch.isclose(shared.loss, model(features, mask, image_embeddings=images[groups]).loss)


def test_ctc_tdt_loss_is_weighted_sum_and_gradients_finite():
    torch.manual_seed(0)
    model = make_head("ctc_tdt", ctc_loss_weight=0.25)
    features, mask = padded_batch()
    labels = torch.tensor([[1, 2, 3, 4], [5, 6, -100, -100], [7, -100, -100, -100]])
    out = model(features, mask, labels=labels)
    torch.testing.assert_close(out.loss, 0.75 * out.tdt_loss + 0.25 * out.ctc_loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("weight, computed", [(0.0, "tdt_loss"), (1.0, "ctc_loss")])
def test_a_loss_weighted_zero_is_not_computed(weight, computed):
    features, mask = padded_batch()
    labels = torch.tensor([[1, 2, 3, 4], [5, 6, -100, -100], [7, -100, -100, -100]])
    out = make_head("ctc_tdt", ctc_loss_weight=weight)(features, mask, labels=labels)
    skipped = {"tdt_loss", "ctc_loss"} - {computed}
    assert getattr(out, skipped.pop()) is None and torch.equal(out.loss, getattr(out, computed))


def test_fused_and_unfused_joint_give_the_same_loss_and_gradients():
    torch.manual_seed(0)
    fused = make_head("ctc_tdt", fuse_joint_loss=True)
    unfused = make_head("ctc_tdt", fuse_joint_loss=False)
    unfused.load_state_dict(fused.state_dict())
    features, mask = padded_batch()
    labels = torch.tensor([[1, 2, 3], [5, 6, -100], [7, -100, -100]])
    losses = []
    for model in (fused, unfused):
        loss = model(features, mask, labels=labels).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(fused.named_parameters(), unfused.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_pruned_transducer_loss_trains_in_the_windows_the_ctc_head_places(monkeypatch):
    torch.manual_seed(0)
    pruned = make_head("ctc_tdt", tdt_prune_range=2)
    exact = make_head("ctc_tdt")
    exact.load_state_dict(pruned.state_dict())
    features, mask = padded_batch()
    labels = torch.tensor([[1, 2, 3, 4], [5, 6, -100, -100], [7, -100, -100, -100]])
    seen = []
    monkeypatch.setattr(modeling_fastconformer, "lattice_windows",
                        lambda *args: seen.append(args) or lattice_windows(*args))
    out = pruned(features, mask, labels=labels)
    assert torch.equal(seen[0][0], out.ctc_logits)  # the windows come from this step's CTC head
    assert torch.isfinite(out.tdt_loss) and out.tdt_loss > exact(features, mask, labels=labels).tdt_loss
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in pruned.parameters() if p.grad is not None)
    assert pruned.joint.head.weight.grad.abs().sum() > 0 and pruned.decoder.embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("overrides, message", [
    (dict(tdt_prune_range=1), "an integer >= 2"),
    (dict(tdt_prune_range=4, fuse_joint_loss=False), "fuse_joint_loss=True"),
    (dict(tdt_prune_range=4, ctc_loss_weight=0.0), "ctc_loss_weight > 0"),
    (dict(tdt_prune_range=4, durations=[1, 2]), "durations 0 and 1"),
])
def test_pruning_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=re.escape(message)):  # its cause: a ValueError
        make_head("ctc_tdt", **overrides)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain, checkpointed = make_head("ctc_tdt"), make_head("ctc_tdt")
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing_enable()
    features, mask = padded_batch()
    labels = torch.tensor([[1, 2], [3, -100], [4, -100]])
    for model in (plain, checkpointed):
        model.train()
        model(features, mask, labels=labels).loss.backward()
    for a, b in zip(plain.parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------------------- overfit, decode, export (slow-ish)
UTTERANCE_LABELS = [[1, 2, 3, 4], [5, 6, 5, 7], [8, 9, 10]]


@pytest.fixture(scope="module")
def overfit_model():
    """A tiny CTC + TDT model trained to memorise three utterances."""
    torch.manual_seed(0)
    model = make_head("ctc_tdt", ctc_loss_weight=0.5)
    features, mask = padded_batch(lengths=(96, 88, 72), seed=3)
    width = max(map(len, UTTERANCE_LABELS))
    labels = torch.tensor([row + [-100] * (width - len(row)) for row in UTTERANCE_LABELS])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        model(features, mask, labels=labels).loss.backward()
        optimizer.step()
    return model.eval(), features, mask


def test_overfit_model_decodes_its_utterances_with_ctc_and_tdt(overfit_model):
    model, features, mask = overfit_model
    assert model.transcribe(features, mask, decoding="ctc").sequences == UTTERANCE_LABELS
    tdt = model.transcribe(features, mask, decoding="tdt")
    assert tdt.sequences == UTTERANCE_LABELS
    lengths = model(features, mask).encoder_lengths.tolist()
    for frames, length in zip(tdt.frame_timestamps, lengths):
        assert frames == sorted(frames) and all(0 <= f < length for f in frames)
    assert (tdt.joint_evaluations > 0).all()


def test_export_to_stock_parakeet_gives_identical_outputs(overfit_model):
    model, features, mask = overfit_model
    ctc = model.to_parakeet_ctc()
    torch.testing.assert_close(ctc(input_features=features, attention_mask=mask).logits, model(features, mask).ctc_logits)

    tdt = model.to_parakeet_tdt()
    vocab_size = model.config.vocab_size

    class TokensOnly(LogitsProcessor):  # stock generate takes one argmax over tokens and durations together
        def __call__(self, input_ids, scores):
            scores[:, vocab_size:] = float("-inf")
            return scores

    generated = tdt.generate(input_features=features, attention_mask=mask, logits_processor=[TokensOnly()])
    stock = [[t for t in row if t != model.config.blank_token_id] for row in generated.sequences.tolist()]
    assert stock == model.transcribe(features, mask).sequences == UTTERANCE_LABELS


# ----------------------------------------------------------------------------------- round trips and Auto classes
@pytest.mark.parametrize("kind", ["encoder", "mtp", "align", "ctc_tdt"])
def test_save_load_round_trip_and_auto_classes(tmp_path, kind):
    torch.manual_seed(0)
    model = (FastConformerModel(ENCODER) if kind == "encoder" else make_head(kind)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "modeling_fastconformer.py").is_file() and (tmp_path / "tdt_loss.py").is_file()
    assert AutoConfig.from_pretrained(tmp_path).auto_map["AutoModel"].endswith(type(model).__name__)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    features, mask = padded_batch()
    first, second = model.encoder if kind != "encoder" else model, loaded.encoder if kind != "encoder" else loaded
    torch.testing.assert_close(first(features, mask).last_hidden_state, second(features, mask).last_hidden_state)
    if kind == "ctc_tdt":  # buffers that are not saved are rebuilt from the config
        assert loaded.durations.tolist() == model.config.durations
        assert loaded.transcribe(features, mask).sequences == model.transcribe(features, mask).sequences


def test_head_auto_classes(tmp_path):
    make_head("ctc_tdt").save_pretrained(tmp_path / "asr")
    make_head("mtp").save_pretrained(tmp_path / "mtp")
    assert type(AutoModelForCTC.from_pretrained(tmp_path / "asr")) is FastConformerForCTCTDT
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path / "mtp")) is FastConformerForMaskedTokenPrediction


REMOTE_CODE_CHECK = """
import torch
from transformers import AutoModel
folder = sys.argv[1]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert "avalign" not in type(model).__module__, type(model).__module__
inputs = torch.load(folder + "/inputs.pt")
out = model(inputs["features"], inputs["mask"])
torch.testing.assert_close(out.ctc_logits, inputs["expected"])
print("REMOTE", type(model).__name__)
"""


def test_remote_code_loads_where_avalign_is_not_installed(tmp_path, run_without_avalign):
    torch.manual_seed(0)
    model = make_head("ctc_tdt").eval()
    model.save_pretrained(tmp_path)
    features, mask = padded_batch()
    torch.save({"features": features, "mask": mask, "expected": model(features, mask).ctc_logits}, tmp_path / "inputs.pt")
    assert "REMOTE FastConformerForCTCTDT" in run_without_avalign(REMOTE_CODE_CHECK, tmp_path)


# ------------------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors():
    model = make_head("ctc_tdt")
    features, mask = padded_batch()
    with pytest.raises(ValueError, match="no feature frames"):
        model(features, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="no feature frames"):
        model(features[:, :0])
    with pytest.raises(TypeError, match="floating-point"):
        model(features.long())
    with pytest.raises(ValueError, match=r"shape \(batch, frames, 80\)"):
        model(features[0])
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(features, mask[:, :10])
    with pytest.raises(ValueError, match="label id 12 at row 1"):
        model(features, mask, labels=torch.tensor([[1, 2], [12, -100], [3, -100]]))
    with pytest.raises(ValueError, match="not the blank"):
        model(features, mask, labels=torch.tensor([[1, 2], [11, -100], [3, -100]]))
    with pytest.raises(ValueError, match="right-padded"):
        model(features, mask, labels=torch.tensor([[1, 2], [-100, 3], [3, -100]]))
    with pytest.raises(ValueError, match="image_embeddings must have shape"):
        make_head("align")(features, mask, image_embeddings=torch.randn(3, 7))


@pytest.mark.parametrize(
    "config, message",
    [
        (lambda: FastConformerConfig(hidden_size=30, num_attention_heads=4), "divisible by num_attention_heads"),
        (lambda: FastConformerConfig(subsampling_factor=6), "power of 2"),
        (lambda: FastConformerConfig(conv_kernel_size=4), "must be odd"),
        (lambda: FastConformerConfig(spec_augment_time_masks=-1), "SpecAugment mask counts"),
        (lambda: FastConformerCTCTDTConfig(vocab_size=10, blank_token_id=10), "blank_token_id"),
        (lambda: FastConformerCTCTDTConfig(durations=[0]), "at least one value >= 1"),
        (lambda: FastConformerAlignmentConfig(pooling="max"), "pooling"),
        (lambda: FastConformerMaskedTokenPredictionConfig(mask_probability=0.0), "mask_probability"),
        (lambda: FastConformerConfig.from_preset("huge"), "Unknown FastConformer preset"),
    ],
)
def test_inconsistent_configs_raise(config, message):
    with pytest.raises(Exception, match=message):
        config()


def test_labels_no_alignment_can_fit_give_zero_not_nan():
    model = make_head("ctc_tdt", durations=[1, 2])  # without duration 0, every label needs its own frame
    features, mask = padded_batch(lengths=(16, 16))
    labels = torch.tensor([[1, 2, 3, 4, 5], [1, 2, -100, -100, -100]])  # row 0: 5 labels, 2 frames
    out = model(features, mask, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
