"""The avalign FastConformer family, built on transformers' Parakeet implementation.

    FastConformerModel                      the bare encoder (a ParakeetEncoder with its own config, checks, lengths)
    FastConformerForMaskedTokenPrediction   stage 1: NEST / BEST-RQ masked prediction of random-projection tokens
    FastConformerForImageAlignment          stage 2: pooled audio -> the image-embedding space of a vision teacher
    FastConformerForCTCTDT                  stage 3: hybrid CTC + TDT ASR, greedy decoding, export to stock Parakeet

Shapes: B batch, T feature frames (10 ms), T' encoder frames (T / subsampling_factor), D encoder width,
H prediction-network width, U label length, V vocabulary (blank included), E image-embedding width.
"""

import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput
from transformers.models.parakeet import (
    ParakeetCTCConfig,
    ParakeetEncoder,
    ParakeetEncoderConfig,
    ParakeetForCTC,
    ParakeetForTDT,
    ParakeetTDTConfig,
)
from transformers.models.parakeet.modeling_parakeet import (
    ParakeetEncoderAttention,
    ParakeetEncoderCTCHead,
    ParakeetEncoderSubsamplingConv2D,
    ParakeetPreTrainedModel,
    ParakeetRNNTDecoder,
    ParakeetTDTJointNetwork,
)

from .pipeline_fastconformer import FastConformerASRPipeline  # noqa: F401  (so that save_pretrained ships it)
from .configuration_fastconformer import (
    FastConformerAlignmentConfig,
    FastConformerConfig,
    FastConformerCTCTDTConfig,
    FastConformerMaskedTokenPredictionConfig,
)
from .tdt_kernels import GreedyBookkeeping, greedy_kernels_for
from .tdt_loss import fused_joint_tdt_loss, lattice_windows, tdt_loss

LABEL_PAD = -100  # labels are padded with -100, as everywhere in transformers


# ----------------------------------------------------------------------------------------------------------- outputs
@dataclass
class FastConformerModelOutput(ModelOutput):
    """
    last_hidden_state (B, T', D); attention_mask (B, T') bool, True on real frames; encoder_lengths (B,);
    hidden_states: one (B, T', D) per layer when `output_hidden_states=True`.
    """

    last_hidden_state: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    encoder_lengths: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class MaskedTokenPredictionOutput(ModelOutput):
    """loss (); logits (B, T', N, K) for N codebooks of K entries; targets (B, T', N); mask (B, T') bool: the
    frames the loss is taken on (masked and real)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    encoder_lengths: torch.Tensor | None = None


@dataclass
class ImageAlignmentOutput(ModelOutput):
    """loss (); audio_embeds (B, E) unit norm; logits_per_audio (B, B) audio-to-image similarity logits."""

    loss: torch.Tensor | None = None
    audio_embeds: torch.Tensor | None = None
    logits_per_audio: torch.Tensor | None = None
    encoder_lengths: torch.Tensor | None = None


@dataclass
class CTCTDTOutput(ModelOutput):
    """loss = (1 - w) * tdt_loss + w * ctc_loss; ctc_logits (B, T', V); encoder_states (B, T', H) projected for
    the joint."""

    loss: torch.Tensor | None = None
    tdt_loss: torch.Tensor | None = None
    ctc_loss: torch.Tensor | None = None
    ctc_logits: torch.Tensor | None = None
    encoder_states: torch.Tensor | None = None
    encoder_lengths: torch.Tensor | None = None


@dataclass
class TranscriptionOutput(ModelOutput):
    """Greedy decoding result per utterance: token ids, the encoder frame each token is emitted at, and (TDT) the
    predicted duration of each token in frames. joint_evaluations (B,) counts joint calls (TDT)."""

    sequences: list[list[int]] | None = None
    frame_timestamps: list[list[int]] | None = None
    token_durations: list[list[int]] | None = None
    joint_evaluations: torch.Tensor | None = None


# ------------------------------------------------------------------------------------------------------ input checks
def check_input_features(input_features: torch.Tensor, attention_mask: torch.Tensor | None, num_mel_bins: int):
    """Validate a batch of log-mel features and return a boolean (B, T) mask of real frames."""
    if not isinstance(input_features, torch.Tensor) or not input_features.is_floating_point():
        raise TypeError(f"input_features must be a floating-point tensor, got {getattr(input_features, 'dtype', type(input_features))}")
    if input_features.ndim != 3 or input_features.shape[-1] != num_mel_bins:
        raise ValueError(
            f"input_features must have shape (batch, frames, {num_mel_bins}), got {tuple(input_features.shape)}"
        )
    batch_size, num_frames, _ = input_features.shape
    if attention_mask is None:
        attention_mask = torch.ones(batch_size, num_frames, dtype=torch.bool, device=input_features.device)
    if attention_mask.shape != (batch_size, num_frames):
        raise ValueError(
            f"attention_mask must have shape {(batch_size, num_frames)} to match input_features, "
            f"got {tuple(attention_mask.shape)}"
        )
    attention_mask = attention_mask.bool()
    empty = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if num_frames == 0 or empty:
        raise ValueError(f"empty audio: utterance(s) {empty or list(range(batch_size))} have no feature frames")
    return attention_mask


def spec_augment(
    input_features: torch.Tensor,
    attention_mask: torch.Tensor,
    freq_masks: int,
    freq_width: int,
    time_masks: int,
    time_width: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment as NeMo draws it: per utterance, `freq_masks` bands of 0..freq_width mel bins and `time_masks`
    spans of 0..time_width frames (a fraction of the utterance's length when time_width < 1) are set to 0, the mean
    of normalised features. Spans lie inside each utterance's real frames. (B, T, F), (B, T) bool -> (B, T, F)."""
    batch_size, _, num_bins = input_features.shape
    lengths = attention_mask.sum(-1)  # (B,)
    if time_width < 1:
        max_time_width = (lengths * time_width).long().clamp(min=1)
    else:
        max_time_width = torch.full_like(lengths, int(time_width)).minimum(lengths)
    max_freq_width = torch.full_like(lengths, min(freq_width, num_bins))
    in_time = _random_spans(time_masks, max_time_width, lengths, input_features.shape[1], generator)  # (B, T)
    in_freq = _random_spans(freq_masks, max_freq_width, torch.full_like(lengths, num_bins), num_bins, generator)
    masked = (in_time[:, :, None] | in_freq[:, None, :]) & attention_mask[:, :, None]
    return input_features.masked_fill(masked, 0.0)


def _random_spans(count: int, max_width: torch.Tensor, extent: torch.Tensor, size: int, generator=None) -> torch.Tensor:
    """`count` spans per row, each of a width uniform in 0..max_width (B,) and placed uniformly inside 0..extent (B,):
    -> (B, size) bool, True inside any span."""
    shape, device = (len(extent), count), extent.device
    width = (torch.rand(shape, generator=generator, device=device) * (max_width[:, None] + 1)).long()
    start = (torch.rand(shape, generator=generator, device=device) * (extent[:, None] - width + 1)).long()
    positions = torch.arange(size, device=device)[None, None, :]  # (1, 1, size)
    inside = (positions >= start[..., None]) & (positions < (start + width)[..., None])  # (B, count, size)
    return inside.any(1)


def _masked_mean(hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T', D), (B, T') -> (B, D)"""
    weights = mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


# ---------------------------------------------------------------------------------------------------------- encoder
class FastConformerPreTrainedModel(ParakeetPreTrainedModel):
    config: FastConformerConfig
    config_class = FastConformerConfig
    base_model_prefix = "encoder"

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, RandomProjectionQuantizer):
            projection, codebooks = module.compute_parameters()
            init.copy_(module.projection, projection)
            init.copy_(module.codebooks, codebooks)
        elif isinstance(module, KMeansQuantizer):
            init.copy_(module.codebooks, module.compute_parameters())
        elif isinstance(module, AlignmentHead):
            if module.attention_query is not None:
                init.normal_(module.attention_query, std=self.config.initializer_range)
            init.constant_(module.logit_scale, module.logit_scale_init)
            init.constant_(module.logit_bias, module.logit_bias_init)
        elif isinstance(module, FastConformerForMaskedTokenPrediction):
            init.normal_(module.mask_embedding, std=self.config.initializer_range)
        elif isinstance(module, FastConformerForCTCTDT):  # a non-persistent buffer: rebuilt, never loaded
            init.copy_(module.durations, torch.tensor(module.config.durations))


class ChannelsLastSubsampling(ParakeetEncoderSubsamplingConv2D):
    """Parakeet's convolutional subsampling, same weights and layers, run channels-last with in-place ReLUs.

    At 8x subsampling the first convolution writes C x T/2 x F/2 values per utterance (200 MB for 8 clips of 12 s at
    C 256), and oneDNN runs the convolutions several times faster channels-last than in the NCHW layout Parakeet
    makes (first convolution 75-92 against 173 ms, the depthwise one after it 36 against 153 ms, outputs equal to
    ~1e-7); an out-of-place ReLU allocates and faults in a second copy of it (86 against 14 ms in place). In NCHW the
    subsampling is most of the encoder's inference time on CPU.
    """

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = input_features.unsqueeze(1).contiguous(memory_format=torch.channels_last)  # (B, 1, T, F)
        lengths = attention_mask.sum(-1) if attention_mask is not None else None
        for layer in self.layers:
            if isinstance(layer, nn.ReLU):
                hidden_states = hidden_states.relu_()  # its input is a convolution's output, used by nothing else
                continue
            # a channels-last weight makes oneDNN write channels-last even where C = 1 leaves the input's ambiguous
            weight = layer.weight.to(memory_format=torch.channels_last)
            hidden_states = F.conv2d(hidden_states, weight, layer.bias, layer.stride, layer.padding, layer.dilation,
                                     layer.groups)
            if attention_mask is not None:  # zero the frames past each length
                lengths = self._get_output_length(lengths, layer)
                frames = torch.arange(hidden_states.shape[2], device=attention_mask.device)
                hidden_states *= (frames < lengths[:, None])[:, None, :, None]
        batch, _, frames, _ = hidden_states.shape
        return self.linear(hidden_states.transpose(1, 2).reshape(batch, frames, -1))  # (B, T', C F) -> (B, T', D)


class StridedShiftAttention(ParakeetEncoderAttention):
    """Parakeet's relative-position attention with its relative shift as a strided view instead of a padded copy.

    The shift reads scores[i, j + T - 1 - i] for each query i and key j from the (B, H, T, 2T - 1) position scores:
    a view with row stride 2T - 2, offset T - 1. Parakeet pads the scores and reshapes them (a fill and a copy of the
    whole tensor in every layer); the scaling that follows reads the view directly. Values are the same, exactly.
    """

    def _rel_shift(self, attention_scores: torch.Tensor) -> torch.Tensor:
        batch, heads, queries, positions = attention_scores.shape
        if positions != 2 * queries - 1:  # not Parakeet's 2T - 1 relative positions
            return super()._rel_shift(attention_scores)
        sb, sh, sq, sp = attention_scores.stride()
        offset = attention_scores.storage_offset() + (queries - 1) * sp
        return attention_scores.as_strided((batch, heads, queries, queries), (sb, sh, sq - sp, sp), offset)


class FastConformerModel(FastConformerPreTrainedModel, ParakeetEncoder):
    """The bare FastConformer encoder: Parakeet's encoder with input checks and encoder lengths in its output."""

    def __init__(self, config: FastConformerConfig):
        super().__init__(config)
        # the same modules and weights, faster forwards
        self.subsampling.__class__ = ChannelsLastSubsampling
        for layer in self.layers:
            layer.self_attn.__class__ = StridedShiftAttention

    def _init_weights(self, module):
        """Variance-preserving weights for an encoder trained from scratch, as PyTorch (and so NeMo) initialise it:
        transformers' N(0, 0.02) suits loading checkpoints, but shrinks unit-variance log-mels to std ~3e-4 by the end
        of the subsampling, and stage 1 then learns less (docs/experiments.md, finding 3). Loaded weights are kept."""
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):  # the subsampling convolutions, followed by ReLUs
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            init.zeros_(module.bias)
        elif module is self.subsampling.linear:
            init.normal_(module.weight, std=module.in_features**-0.5)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.Linear, nn.Conv1d)):  # PyTorch's own default (`reset_parameters`)
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                init.uniform_(module.bias, -(fan_in**-0.5), fan_in**-0.5)

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> FastConformerModelOutput:
        """input_features (B, T, num_mel_bins) log-mel; attention_mask (B, T), 1 on real frames."""
        config = self.config
        attention_mask = check_input_features(input_features, attention_mask, config.num_mel_bins)
        # Zero the padding so that the subsampling convolutions see exactly what an unpadded input would.
        input_features = input_features * attention_mask.unsqueeze(-1).to(input_features.dtype)
        if self.training and config.spec_augment:  # drawn from torch's global RNG, so a resumed run redraws alike
            input_features = spec_augment(
                input_features, attention_mask, config.spec_augment_freq_masks, config.spec_augment_freq_width,
                config.spec_augment_time_masks, config.spec_augment_time_width,
            )  # fmt: skip
        outputs = super().forward(
            input_features, attention_mask=attention_mask, output_hidden_states=output_hidden_states, **kwargs
        )
        return FastConformerModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            attention_mask=outputs.attention_mask.bool(),
            encoder_lengths=self.encoder_lengths(attention_mask),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def encoder_lengths(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) feature mask -> (B,) encoder frames."""
        return self._get_subsampling_output_length(attention_mask.sum(-1)).long()

    def to_parakeet_config(self) -> ParakeetEncoderConfig:
        fields = {k: v for k, v in self.config.to_dict().items() if k in ParakeetEncoderConfig.__dataclass_fields__}
        return ParakeetEncoderConfig(**fields)


class _FastConformerWithEncoder(FastConformerPreTrainedModel):
    """A stage head on top of `self.encoder` (weights under `encoder.*`, as in Parakeet's heads)."""

    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.encoder = FastConformerModel(config.encoder_config)

    def load_encoder_state(self, encoder: nn.Module) -> None:
        """Start from another encoder's weights (the previous stage's); raises if any weight does not fit."""
        self.encoder.load_state_dict(encoder.state_dict(), strict=True)


# ---------------------------------------------------------------------------------------- stage 1: NEST / BEST-RQ
class RandomProjectionQuantizer(nn.Module):
    """BEST-RQ's frozen quantizer: project stacked mel frames, take the nearest unit-norm random code.

    The projection and codebooks are buffers derived from `quantizer_seed`, so targets never drift.
    """

    def __init__(self, config: FastConformerMaskedTokenPredictionConfig):
        super().__init__()
        self.config = config
        projection, codebooks = self.compute_parameters()
        self.register_buffer("projection", projection)  # (N, F * S, C)
        self.register_buffer("codebooks", codebooks)  # (N, K, C)

    def compute_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        config, encoder = self.config, self.config.encoder_config
        generator = torch.Generator().manual_seed(config.quantizer_seed)
        input_dim = encoder.num_mel_bins * encoder.subsampling_factor
        shape = (config.num_codebooks, input_dim, config.codebook_dim)
        projection = torch.randn(shape, generator=generator) * (2.0 / (input_dim + config.codebook_dim)) ** 0.5
        codebooks = torch.randn(config.num_codebooks, config.codebook_size, config.codebook_dim, generator=generator)
        return projection, F.normalize(codebooks, dim=-1)

    @torch.no_grad()
    def forward(self, stacked_features: torch.Tensor) -> torch.Tensor:
        """(B, T', F * S) -> (B, T', N) code indices."""
        projected = F.normalize(torch.einsum("btf,nfc->btnc", stacked_features.float(), self.projection), dim=-1)
        return torch.einsum("btnc,nkc->btnk", projected, self.codebooks).argmax(-1)


class KMeansQuantizer(nn.Module):
    """HuBERT's first-iteration targets: the nearest of K centroids of stacked (normalised) mel frames. The centroids
    are a buffer, fitted once on training speech with `fit` before stage 1 and frozen afterwards; until then they
    are random frames' worth of noise from `quantizer_seed`."""

    def __init__(self, config: FastConformerMaskedTokenPredictionConfig):
        super().__init__()
        self.config = config
        self.register_buffer("codebooks", self.compute_parameters())  # (N, K, F * S)

    def compute_parameters(self) -> torch.Tensor:
        config, encoder = self.config, self.config.encoder_config
        generator = torch.Generator().manual_seed(config.quantizer_seed)
        shape = (config.num_codebooks, config.codebook_size, encoder.num_mel_bins * encoder.subsampling_factor)
        return torch.randn(shape, generator=generator)

    @torch.no_grad()
    def fit(self, stacked_frames: torch.Tensor, iterations: int = 25) -> None:
        """Lloyd's k-means on (M, F * S) stacked frames from a k-means++ start, once per codebook (each seeded)."""
        frames = stacked_frames.float()
        for book in range(self.config.num_codebooks):
            generator = torch.Generator().manual_seed(self.config.quantizer_seed + book)
            centroids = _kmeans_plus_plus(frames, self.config.codebook_size, generator)
            for _ in range(iterations):
                nearest = torch.cdist(frames, centroids).argmin(-1)  # (M,)
                counts = torch.bincount(nearest, minlength=len(centroids)).float()
                sums = torch.zeros_like(centroids).index_add_(0, nearest, frames)
                filled = counts > 0  # an empty cluster keeps its centroid
                centroids[filled] = sums[filled] / counts[filled, None]
            self.codebooks[book] = centroids

    @torch.no_grad()
    def forward(self, stacked_features: torch.Tensor) -> torch.Tensor:
        """(B, T', F * S) -> (B, T', N) code indices."""
        batch_size, num_frames, _ = stacked_features.shape
        flat = stacked_features.float().reshape(1, batch_size * num_frames, -1)
        codes = torch.cdist(flat.expand(len(self.codebooks), -1, -1), self.codebooks).argmin(-1)  # (N, B * T')
        return codes.T.reshape(batch_size, num_frames, -1)


def _kmeans_plus_plus(frames: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """(M, D) -> (k, D) starting centroids, each next one drawn with probability proportional to its squared
    distance from the nearest one chosen so far."""
    chosen = [int(torch.randint(len(frames), (1,), generator=generator))]
    distance = (frames - frames[chosen[0]]).square().sum(-1)  # (M,)
    for _ in range(k - 1):
        chosen.append(int(torch.multinomial(distance.clamp(min=1e-12), 1, generator=generator)))
        distance = torch.minimum(distance, (frames - frames[chosen[-1]]).square().sum(-1))
    return frames[chosen].clone()


def stack_frames(input_features: torch.Tensor, factor: int, num_encoder_frames: int) -> torch.Tensor:
    """(B, T, F) -> (B, T', F * factor): the feature frames under each encoder frame, side by side."""
    batch_size, num_frames, num_bins = input_features.shape
    padded = F.pad(input_features, (0, 0, 0, (-num_frames) % factor))
    stacked = padded.reshape(batch_size, -1, num_bins * factor)
    return F.pad(stacked, (0, 0, 0, max(0, num_encoder_frames - stacked.shape[1])))[:, :num_encoder_frames]


def block_mask(attention_mask: torch.Tensor, probability: float, block_size: int, generator=None) -> torch.Tensor:
    """Random blocks of `block_size` feature frames; every utterance gets at least one. (B, T) -> (B, T) bool."""
    lengths = attention_mask.sum(-1)
    starts = (torch.rand(attention_mask.shape, generator=generator, device=attention_mask.device) < probability)
    starts &= attention_mask
    forced = torch.rand(lengths.shape, generator=generator, device=attention_mask.device)
    forced_start = (forced * (lengths - block_size + 1).clamp(min=1)).long()
    starts[torch.arange(len(lengths)), forced_start] = True
    # a frame is masked when a block starts at most block_size - 1 frames before it
    covered = F.max_pool1d(F.pad(starts[:, None].float(), (block_size - 1, 0)), block_size, stride=1)
    return covered[:, 0].bool() & attention_mask


class FastConformerForMaskedTokenPrediction(_FastConformerWithEncoder):
    """Stage 1: block-mask the input features, predict the quantizer's codes of the clean input at masked frames."""

    config: FastConformerMaskedTokenPredictionConfig
    config_class = FastConformerMaskedTokenPredictionConfig

    def __init__(self, config: FastConformerMaskedTokenPredictionConfig):
        super().__init__(config)
        quantizer = KMeansQuantizer if config.quantizer == "kmeans" else RandomProjectionQuantizer
        self.quantizer = quantizer(config)
        self.mask_embedding = nn.Parameter(torch.zeros(config.encoder_config.num_mel_bins))
        self.decoder = nn.Linear(config.encoder_config.hidden_size, config.num_codebooks * config.codebook_size)
        self.post_init()

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        feature_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> MaskedTokenPredictionOutput:
        """feature_mask (B, T) bool: the frames to mask; drawn with `block_mask` when not given."""
        return self.masked_prediction(self.encoder, input_features, attention_mask, feature_mask, **kwargs)

    def masked_prediction(
        self,
        encoder: nn.Module,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        feature_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> MaskedTokenPredictionOutput:
        """The masked-token loss through `encoder`: this model's own, or another stage's (stage 2's joint objective
        keeps stage 1's quantizer, mask embedding and decoder on the encoder it aligns)."""
        config = self.config
        attention_mask = check_input_features(input_features, attention_mask, config.encoder_config.num_mel_bins)
        if feature_mask is None:
            feature_mask = block_mask(attention_mask, config.mask_probability, config.mask_block_size)
        masked_features = torch.where(feature_mask[..., None], self.mask_embedding.to(input_features.dtype), input_features)

        encoder_outputs = encoder(masked_features, attention_mask=attention_mask, **kwargs)
        hidden_states = encoder_outputs.last_hidden_state  # (B, T', D)
        batch_size, num_encoder_frames, _ = hidden_states.shape
        logits = self.decoder(hidden_states).view(batch_size, num_encoder_frames, config.num_codebooks, -1)

        factor = config.encoder_config.subsampling_factor
        clean = input_features * attention_mask[..., None].to(input_features.dtype)
        targets = self.quantizer(stack_frames(clean, factor, num_encoder_frames))  # (B, T', N)
        frame_masked = stack_frames(feature_mask[..., None].float(), factor, num_encoder_frames).amax(-1) > 0
        loss_mask = frame_masked & encoder_outputs.attention_mask
        loss = F.cross_entropy(logits[loss_mask].flatten(0, 1).float(), targets[loss_mask].flatten())
        return MaskedTokenPredictionOutput(
            loss=loss, logits=logits, targets=targets, mask=loss_mask, encoder_lengths=encoder_outputs.encoder_lengths
        )


# --------------------------------------------------------------------------------------------- stage 2: alignment
class AlignmentHead(nn.Module):
    """Encoder frames -> one unit vector in the image-embedding space: pooling, then a projection MLP."""

    def __init__(self, config: FastConformerAlignmentConfig):
        super().__init__()
        hidden_size = config.encoder_config.hidden_size
        projection_size = config.projection_hidden_size or 2 * hidden_size
        self.pooling = config.pooling
        self.attention_query = nn.Parameter(torch.zeros(hidden_size)) if config.pooling == "attention" else None
        self.projection = nn.Sequential(
            nn.Linear(hidden_size, projection_size), nn.GELU(), nn.Linear(projection_size, config.image_embedding_dim)
        )
        self.logit_scale_init, self.logit_bias_init = config.logit_scale_init, config.logit_bias_init
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init))
        self.logit_bias = nn.Parameter(torch.tensor(config.logit_bias_init))

    def pool(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T', D), (B, T') -> (B, D)"""
        if self.attention_query is None:
            return _masked_mean(hidden_states, mask)
        scores = hidden_states @ self.attention_query / hidden_states.shape[-1] ** 0.5  # (B, T')
        weights = scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(-1)
        return torch.einsum("bt,btd->bd", weights, hidden_states)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.pool(hidden_states, mask)), dim=-1)


def alignment_loss(
    kind: str, logits: torch.Tensor, positives: torch.Tensor, cosine: torch.Tensor, pairs: torch.Tensor | None = None
) -> torch.Tensor:
    """logits (B, B) scaled similarities; positives (B, B) bool, True where audio i describes image j; pairs (B, B)
    bool, the pairs the loss may use (default all: every other image is a negative)."""
    if kind == "cosine":
        return (1.0 - cosine.diagonal()).mean()
    if pairs is not None:
        pairs = pairs | positives
    if kind == "infonce":  # symmetric, several positives per row share the target mass
        if pairs is not None:  # a pair that may not be used is no competitor in the softmax
            logits = logits.masked_fill(~pairs, torch.finfo(logits.dtype).min)
        targets = positives.float()
        audio_to_image = F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
        image_to_audio = F.cross_entropy(logits.T, targets.T / targets.T.sum(1, keepdim=True))
        return (audio_to_image + image_to_audio) / 2
    signs = 2.0 * positives.float() - 1.0  # SigLIP: a binary decision per pair, normalised by the batch size
    pair_losses = -F.logsigmoid(signs * logits)
    if pairs is not None:
        pair_losses = pair_losses * pairs
    return pair_losses.sum() / logits.shape[0]


class FastConformerForImageAlignment(_FastConformerWithEncoder):
    """Stage 2: the whole encoder and an alignment head learn to place audio near the embedding of its prompt image."""

    config: FastConformerAlignmentConfig
    config_class = FastConformerAlignmentConfig

    def __init__(self, config: FastConformerAlignmentConfig):
        super().__init__(config)
        self.alignment_head = AlignmentHead(config)
        self.post_init()

    def embed_audio(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """-> (B, E) unit-norm audio embeddings, pooled from block `config.alignment_layer` (default the last), and
        the encoder outputs."""
        layer = self.config.alignment_layer  # hidden_states[0] is the subsampling's output, [k] block k's
        intermediate = layer is not None and layer < self.config.encoder_config.num_hidden_layers
        encoder_outputs = self.encoder(input_features, attention_mask=attention_mask,
                                       output_hidden_states=intermediate or None, **kwargs)  # fmt: skip
        hidden_states = encoder_outputs.hidden_states[layer] if intermediate else encoder_outputs.last_hidden_state
        embeds = self.alignment_head(hidden_states, encoder_outputs.attention_mask)
        return embeds, encoder_outputs

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_embeddings: torch.Tensor | None = None,
        image_groups: torch.Tensor | None = None,
        negative_groups: torch.Tensor | None = None,
        **kwargs,
    ) -> ImageAlignmentOutput:
        """image_embeddings (B, E) from the teacher; image_groups (B,) ints, equal where rows share an image
        (Vaani has many utterances per image), so duplicates are positives rather than negatives; negative_groups
        (B,) ints: negatives are drawn only within a group (e.g. a language, so that language identity cannot solve
        the task); default: every other image in the batch."""
        audio_embeds, encoder_outputs = self.embed_audio(input_features, attention_mask, **kwargs)
        loss = logits = None
        if image_embeddings is not None:
            if image_embeddings.shape != audio_embeds.shape:
                raise ValueError(
                    f"image_embeddings must have shape {tuple(audio_embeds.shape)} "
                    f"(image_embedding_dim={self.config.image_embedding_dim}), got {tuple(image_embeddings.shape)}"
                )
            image_embeds = F.normalize(image_embeddings.to(audio_embeds.dtype), dim=-1)
            cosine = audio_embeds @ image_embeds.T  # (B, B)
            head = self.alignment_head
            logits = cosine * head.logit_scale.exp()
            if self.config.alignment_loss == "siglip":
                logits = logits + head.logit_bias
            if image_groups is None:
                image_groups = torch.arange(len(cosine), device=cosine.device)
            positives = image_groups[:, None] == image_groups[None, :]
            pairs = None if negative_groups is None else negative_groups[:, None] == negative_groups[None, :]
            loss = alignment_loss(self.config.alignment_loss, logits, positives, cosine, pairs)
        return ImageAlignmentOutput(
            loss=loss, audio_embeds=audio_embeds, logits_per_audio=logits,
            encoder_lengths=encoder_outputs.encoder_lengths,
        )


# ----------------------------------------------------------------------------------------- stage 3: CTC + TDT ASR
def check_labels(labels: torch.Tensor, vocab_size: int, blank_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """labels (B, U) padded with -100 -> (targets with padding set to 0, target lengths (B,))."""
    valid = labels != LABEL_PAD
    bad = valid & ((labels < 0) | (labels >= vocab_size) | (labels == blank_token_id))
    if bad.any():
        row, position = bad.nonzero()[0].tolist()
        raise ValueError(
            f"label id {labels[row, position].item()} at row {row}, position {position} is not a token: ids must be "
            f"in [0, {vocab_size}) and not the blank ({blank_token_id}); pad labels with {LABEL_PAD}"
        )
    if (valid.long().diff(dim=1) > 0).any():
        raise ValueError(f"labels must be right-padded with {LABEL_PAD}: found a token after padding")
    return labels.masked_fill(~valid, 0), valid.sum(-1)


# model -> (weights key, _GreedyStepWeights), outside the model: deepcopy and pickle cannot copy oneDNN's packed
# weights, and a copy must not share the original's cache anyway
_STEP_WEIGHTS = weakref.WeakKeyDictionary()


class _FewRowLinear:
    """x (R, in) -> x W^T + b for a few rows R, with the weight laid out for the fastest product there is:
    - on a CPU, oneDNN's packed layout (`mkldnn._linear_pointwise`): at R = 16, 640 -> 2560, 0.37 ms against 0.96 ms
      for MKL's sgemm on an AMD EPYC (2 threads; MKL picks a slow path for so few rows there);
    - elsewhere, (in, out) for addmm: MKL multiplies a few rows by it several times faster than by the (out, in) one
      nn.Linear keeps on Intel CPUs (16 x 640 by 640 -> 2560: 0.36 ms against 1.54 ms, benchmarks/README.md).
    weight (out, in); bias (out,) or None; rows: the row count oneDNN tunes the packing for (any count works).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rows: int = 16):
        self.bias, self.packed, self.in_out = None if bias is None else bias.detach(), None, None
        if weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), rows)
        else:
            self.in_out = weight.detach().t().contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return x @ self.in_out if self.bias is None else torch.addmm(self.bias, x, self.in_out)


class _GreedyStepWeights:
    """The prediction network's and the joint's weights laid out for decoding steps of a few rows.

    Decoding multiplies a few rows at a time by weights too large for the caches, so it is bound by reading them:
    every product goes through `_FewRowLinear`, and the first LSTM layer's input product depends on the token alone:
    `token_gates` (V, 4H) holds it for every token, biases included, so a step reads only the hidden weights (half
    the bytes at one layer). Built once per set of weights (`for_model` keys it on each parameter's storage and
    version: an optimiser step or a load makes a new one).
    """

    def __init__(self, model: "FastConformerForCTCTDT"):
        decoder, lstm = model.decoder, model.decoder.lstm
        biases = [getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}") for k in range(lstm.num_layers)]
        self.token_gates = torch.addmm(biases[0], decoder.embedding.weight, lstm.weight_ih_l0.t())  # (V, 4H)
        layers = range(1, lstm.num_layers)
        self.input_products = [None] + [_FewRowLinear(getattr(lstm, f"weight_ih_l{k}"), biases[k]) for k in layers]
        self.hidden_products = [_FewRowLinear(getattr(lstm, f"weight_hh_l{k}"), None) for k in range(lstm.num_layers)]
        self.projector = _FewRowLinear(decoder.decoder_projector.weight, decoder.decoder_projector.bias)
        self.head = _FewRowLinear(model.joint.head.weight, model.joint.head.bias)
        self.hidden_size, self.activation = lstm.hidden_size, model.joint.activation

    @staticmethod
    def for_model(model: "FastConformerForCTCTDT") -> "_GreedyStepWeights":
        parameters = [*model.decoder.parameters(), *model.joint.parameters()]
        key = tuple((p.untyped_storage().data_ptr(), p._version, p.dtype, p.device) for p in parameters)
        cached = _STEP_WEIGHTS.get(model)
        if cached is None or cached[0] != key:
            cached = _STEP_WEIGHTS[model] = (key, _GreedyStepWeights(model))
        return cached[1]

    def prediction_step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """(R,) token ids and the LSTM state ((L, R, H), (L, R, H)) -> (R, H) decoder states and the new state."""
        hidden, cell = state
        new_hidden, new_cell = [], []
        for k, hidden_product in enumerate(self.hidden_products):
            inputs = self.token_gates.index_select(0, tokens) if k == 0 else self.input_products[k](x)
            gates = hidden_product(hidden[k]).add_(inputs)  # (R, 4H)
            i, f, _, o = gates.sigmoid().chunk(4, dim=1)  # nn.LSTM's gate order: one call for the three sigmoids
            g = gates[:, 2 * i.shape[1] : 3 * i.shape[1]].tanh()
            c = f * cell[k] + i * g
            x = o * torch.tanh(c)
            new_hidden.append(x)
            new_cell.append(c)
        if len(new_hidden) == 1:  # one layer: views, no copies
            state = (new_hidden[0][None], new_cell[0][None])
        else:
            state = (torch.stack(new_hidden), torch.stack(new_cell))
        return self.projector(x), state

    def start(self, blank: torch.Tensor, num_layers: int):
        """(B,) blank ids -> the decoder states (B, H) and LSTM state after the blank, from a zero state."""
        zeros = self.token_gates.new_zeros((num_layers, len(blank), self.hidden_size))
        return self.prediction_step(blank, (zeros, zeros))

    def advance(self, tokens, emit, decoder_state, lstm_state):
        """The prediction network's step on the rows with emit (B,) True; the other rows keep their state."""
        new_state, new_lstm_state = self.prediction_step(tokens, lstm_state)
        decoder_state = torch.where(emit[:, None], new_state, decoder_state)
        lstm_state = tuple(torch.where(emit[:, None], new, old) for new, old in zip(new_lstm_state, lstm_state))
        return decoder_state, lstm_state

    def joint(self, encoder_frame: torch.Tensor, decoder_state: torch.Tensor) -> torch.Tensor:
        """(R, H), (R, H) -> (R, V + D) joint logits."""
        return self.joint_from_input(self.activation(encoder_frame + decoder_state))

    def joint_from_input(self, joint_input: torch.Tensor) -> torch.Tensor:
        """(R, H) activations -> (R, V + D) joint logits."""
        return self.head(joint_input)


class FastConformerForCTCTDT(_FastConformerWithEncoder):
    """Stage 3: CTC head and TDT transducer (prediction network + joint) over one encoder.

    Module names match transformers' `ParakeetForCTC` / `ParakeetForTDT`, so both export by copying weights.
    """

    config: FastConformerCTCTDTConfig
    config_class = FastConformerCTCTDTConfig

    def __init__(self, config: FastConformerCTCTDTConfig):
        super().__init__(config)
        hidden_size = config.encoder_config.hidden_size
        self.ctc_head = ParakeetEncoderCTCHead(hidden_size, config.vocab_size, kernel_size=1)
        self.encoder_projector = nn.Linear(hidden_size, config.decoder_hidden_size)
        self.decoder = ParakeetRNNTDecoder(config)
        self.joint = ParakeetTDTJointNetwork(config)
        self.register_buffer("durations", torch.tensor(config.durations), persistent=False)
        self.post_init()

    # ------------------------------------------------------------------------------------------------ training
    def prediction_network(self, labels: torch.Tensor, state=None):
        """(B, U) token ids -> (B, U, H) decoder states and the LSTM state."""
        decoder = self.decoder
        output, state = decoder.lstm(decoder.embedding(labels), state)
        return decoder.decoder_projector(output), state

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> CTCTDTOutput:
        """labels (B, U) token ids right-padded with -100."""
        config = self.config
        encoder_outputs = self.encoder(input_features, attention_mask=attention_mask, **kwargs)
        ctc_logits = self.ctc_head(encoder_outputs.last_hidden_state)  # (B, T', V)
        encoder_states = self.encoder_projector(encoder_outputs.last_hidden_state)  # (B, T', H)
        lengths = encoder_outputs.encoder_lengths
        output = CTCTDTOutput(ctc_logits=ctc_logits, encoder_states=encoder_states, encoder_lengths=lengths)
        if labels is None:
            return output

        targets, target_lengths = check_labels(labels, config.vocab_size, config.blank_token_id)
        weight = config.ctc_loss_weight
        output.loss = 0.0
        if weight < 1.0:  # a loss with weight 0 is not computed at all
            output.tdt_loss = self.transducer_loss(encoder_states, lengths, targets, target_lengths, ctc_logits)
            output.loss = output.loss + (1 - weight) * output.tdt_loss
        if weight > 0.0:
            log_probs = ctc_logits.float().log_softmax(-1).transpose(0, 1)  # (T', B, V)
            output.ctc_loss = F.ctc_loss(
                log_probs, targets, lengths, target_lengths, blank=config.blank_token_id,
                reduction=config.ctc_loss_reduction, zero_infinity=config.zero_infinity,
            )
            output.loss = output.loss + weight * output.ctc_loss
        return output

    def transducer_loss(self, encoder_states, encoder_lengths, targets, target_lengths, ctc_logits=None):
        """TDT loss of (B, T', H) projected encoder frames against (B, U) targets (padding 0); with
        `config.tdt_prune_range`, the pruned loss in windows that the (B, T', V) CTC logits place."""
        config = self.config
        start = torch.full_like(targets[:, :1], config.blank_token_id)
        decoder_states, _ = self.prediction_network(torch.cat([start, targets], dim=1))  # (B, U+1, H)
        loss_arguments = dict(
            targets=targets, logit_lengths=encoder_lengths, target_lengths=target_lengths,
            blank_token_id=config.blank_token_id, durations=config.durations, sigma=config.sigma,
            reduction=config.tdt_loss_reduction, zero_infinity=config.zero_infinity,
        )
        if config.fuse_joint_loss:
            windows = None
            if config.tdt_prune_range is not None:
                windows = lattice_windows(ctc_logits, targets, encoder_lengths, target_lengths, config.blank_token_id,
                                          config.tdt_prune_range)
            return fused_joint_tdt_loss(
                encoder_states, decoder_states, self.joint.head, self.joint.activation, windows=windows,
                **loss_arguments,
            )
        joint = self.joint(decoder_states[:, None], encoder_states[:, :, None])  # (B, T', U+1, V+D)
        return tdt_loss(joint[..., : config.vocab_size], joint[..., config.vocab_size :], **loss_arguments)

    # ------------------------------------------------------------------------------------------------ decoding
    @torch.no_grad()
    def transcribe(
        self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None, decoding: str = "tdt"
    ) -> TranscriptionOutput:
        """Greedy decoding of a batch with the TDT transducer (`decoding="tdt"`) or the CTC head (`"ctc"`)."""
        if decoding not in ("tdt", "ctc"):
            raise ValueError(f"decoding must be 'tdt' or 'ctc', got {decoding!r}")
        outputs = self(input_features, attention_mask=attention_mask)
        if decoding == "ctc":
            return ctc_greedy_decode(outputs.ctc_logits, outputs.encoder_lengths, self.config.blank_token_id)
        return self.tdt_greedy_decode(outputs.encoder_states, outputs.encoder_lengths)

    @torch.no_grad()
    def tdt_greedy_decode(self, encoder_states: torch.Tensor, encoder_lengths: torch.Tensor) -> TranscriptionOutput:
        """Batched label-looping greedy TDT: the outer loop emits one label per utterance, the inner loop skips
        blanks by their predicted durations; the prediction network advances once per label, on the rows that
        emitted one. Both run on every row, with results kept by mask where a row takes part: a step reads the same
        weights for 1 row as for 16 (it is bound by reading them, `_GreedyStepWeights`), and masks need no gathers.

        encoder_states (B, T', H) projected encoder frames; encoder_lengths (B,).
        """
        max_time = encoder_states.shape[1]
        in_range = (encoder_lengths >= 0) & (encoder_lengths <= max_time)
        if len(encoder_lengths) != len(encoder_states) or not bool(in_range.all()):
            raise ValueError(f"encoder_lengths must hold one length in [0, {max_time}] per row of encoder_states "
                             f"{tuple(encoder_states.shape)}, got {encoder_lengths.tolist()}.")
        config, weights = self.config, _GreedyStepWeights.for_model(self)
        batch_size, vocab_size = encoder_states.shape[0], config.vocab_size
        blank = torch.full((batch_size,), config.blank_token_id, device=encoder_states.device)
        decoder_state, lstm_state = weights.start(blank, self.decoder.lstm.num_layers)  # (B, H)
        kernels = greedy_kernels_for(encoder_states, weights.activation)
        if kernels is not None:
            return self._compiled_greedy_decode(kernels, weights, encoder_states, encoder_lengths, decoder_state,
                                                lstm_state)
        frames = encoder_states.reshape(batch_size * max_time, -1)  # (B T', H)
        first_frame = torch.arange(batch_size, device=blank.device) * max_time  # each row's frame 0 in `frames`
        time = torch.zeros_like(blank)
        symbols_at_frame = torch.zeros_like(blank)
        joint_evaluations = torch.zeros_like(blank)
        steps = []  # per outer step, (4, B): emitted?, token, frame, duration

        active = time < encoder_lengths
        while active.any():
            token, duration = blank.clone(), torch.zeros_like(blank)
            searching = active  # (B,) rows still looking for their next label
            while searching.any():  # skip blanks by their durations
                frame = frames.index_select(0, first_frame + time.clamp(max=max_time - 1))  # (B, H)
                logits = weights.joint(frame, decoder_state)  # (B, V+D)
                step_token = logits[:, :vocab_size].argmax(-1)
                step_duration = self.durations[logits[:, vocab_size:].argmax(-1)]
                joint_evaluations += searching
                token = torch.where(searching, step_token, token)
                duration = torch.where(searching, step_duration, duration)
                skip = searching & (step_token == config.blank_token_id)
                time = torch.where(skip, time + step_duration.clamp(min=1), time)
                symbols_at_frame = torch.where(skip, 0, symbols_at_frame)
                searching = skip & (time < encoder_lengths)
            emit = active & (token != config.blank_token_id) & (time < encoder_lengths)
            steps.append(torch.stack([emit.long(), token, time, duration]))
            # a label of duration 0 stays on its frame, at most max_symbols_per_step times in a row
            symbols_at_frame = torch.where(emit & (duration == 0), symbols_at_frame + 1, 0)
            force = symbols_at_frame >= config.max_symbols_per_step
            time = torch.where(emit, time + duration + force.long(), time)
            symbols_at_frame = torch.where(force, 0, symbols_at_frame)
            if emit.any():  # the prediction network advances on the rows that emitted
                decoder_state, lstm_state = weights.advance(token, emit, decoder_state, lstm_state)
            active = emit & (time < encoder_lengths)
        return TranscriptionOutput(**_labels_per_utterance(steps, batch_size), joint_evaluations=joint_evaluations)

    def _compiled_greedy_decode(self, kernels, weights, encoder_states, encoder_lengths, decoder_state, lstm_state):
        """`tdt_greedy_decode`'s loop with its per-row bookkeeping in C (`tdt_kernels.GreedyBookkeeping`): the same
        products on every row, the same arithmetic, the same outputs; only the ~20 small torch ops per joint call
        between them become one call."""
        config = self.config
        rows = GreedyBookkeeping(kernels, encoder_states, encoder_lengths, self.durations, config.blank_token_id,
                                 config.max_symbols_per_step)
        steps = []
        while rows.active.any():
            rows.start_search(decoder_state)
            while rows.search_step(weights.joint_from_input(rows.joint_input)):  # (B, V+D) logits
                pass
            if rows.emit_step():
                decoder_state, lstm_state = weights.advance(rows.token, rows.emitted, decoder_state, lstm_state)
            steps.append(rows.record.clone())
        return TranscriptionOutput(**_labels_per_utterance(steps, len(encoder_lengths)),
                                   joint_evaluations=rows.joint_evaluations)

    # ------------------------------------------------------------------------------------------------ export
    def to_parakeet_ctc(self) -> ParakeetForCTC:
        """The encoder and CTC head as a stock `ParakeetForCTC` (no custom code needed to run it)."""
        config = ParakeetCTCConfig(
            vocab_size=self.config.vocab_size, pad_token_id=self.config.blank_token_id,
            ctc_zero_infinity=self.config.zero_infinity, encoder_config=self.encoder.to_parakeet_config().to_dict(),
        )
        return _copy_weights(self, ParakeetForCTC(config), prefixes=("encoder.", "ctc_head."))

    def to_parakeet_tdt(self) -> ParakeetForTDT:
        """The encoder and TDT transducer as a stock `ParakeetForTDT`. Its generation config starts from the blank
        and suppresses the duration logits: stock `generate` takes the token argmax over the whole joint output
        (tokens and durations), so a winning duration logit would be read as a token id past the vocabulary."""
        c = self.config
        config = ParakeetTDTConfig(
            vocab_size=c.vocab_size, decoder_hidden_size=c.decoder_hidden_size, num_decoder_layers=c.num_decoder_layers,
            hidden_act=c.hidden_act, max_symbols_per_step=c.max_symbols_per_step, durations=list(c.durations),
            blank_token_id=c.blank_token_id, pad_token_id=c.pad_token_id,
            encoder_config=self.encoder.to_parakeet_config().to_dict(),
        )
        model = _copy_weights(self, ParakeetForTDT(config), prefixes=("encoder.", "encoder_projector.", "decoder.", "joint."))
        model.generation_config.decoder_start_token_id = c.blank_token_id
        model.generation_config.suppress_tokens = list(range(c.vocab_size, c.vocab_size + len(c.durations)))
        return model


def _labels_per_utterance(steps: list[torch.Tensor], batch_size: int) -> dict:
    """Greedy TDT's per-step (4, B) records [emitted?, token, frame, duration] -> per-utterance lists, in one copy."""
    steps = steps or [torch.zeros(4, batch_size, dtype=torch.long)]  # nothing to decode: no labels
    emitted, tokens, frames, durations = torch.stack(steps, dim=-1).cpu()  # (B, S) each
    keep = emitted.bool()
    per_row = lambda values: [row[mask].tolist() for row, mask in zip(values, keep)]  # noqa: E731
    return dict(sequences=per_row(tokens), frame_timestamps=per_row(frames), token_durations=per_row(durations))


def _copy_weights(source: nn.Module, target: nn.Module, prefixes: tuple[str, ...]) -> nn.Module:
    state = {k: v for k, v in source.state_dict().items() if k.startswith(prefixes)}
    target.load_state_dict(state, strict=True)
    return target.eval()


def ctc_greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, blank_token_id: int) -> TranscriptionOutput:
    """Best path: argmax per frame, merge repeats, drop blanks. logits (B, T', V); lengths (B,)."""
    best = logits.argmax(-1).tolist()
    sequences, timestamps = [], []
    for path, length in zip(best, lengths.tolist()):
        tokens, frames, previous = [], [], blank_token_id
        for frame, token in enumerate(path[:length]):
            if token != blank_token_id and token != previous:
                tokens.append(token)
                frames.append(frame)
            previous = token
        sequences.append(tokens)
        timestamps.append(frames)
    return TranscriptionOutput(sequences=sequences, frame_timestamps=timestamps)


__all__ = [
    "FastConformerForCTCTDT",
    "FastConformerForImageAlignment",
    "FastConformerForMaskedTokenPrediction",
    "FastConformerModel",
    "FastConformerPreTrainedModel",
    "ctc_greedy_decode",
    "spec_augment",
    "stack_frames",
]
