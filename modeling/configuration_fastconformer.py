"""Configurations of the avalign FastConformer family.

`FastConformerConfig` is the bare encoder: transformers' `ParakeetEncoderConfig` under its own `model_type`, so its
weights are Parakeet-compatible. Each stage head composes it as `encoder_config`, as Parakeet's heads do.
"""

import copy
import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.models.parakeet import ParakeetEncoderConfig

# NeMo's FastConformer sizes (d_model x n_layers, heads), plus tiny ones for tests and the CPU demo.
FASTCONFORMER_PRESETS = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 subsampling_conv_channels=16, conv_kernel_size=5),
    # 4x subsampling (40 ms frames): CTC over characters needs more frames than espeak's 10-20 characters a second
    "demo": dict(hidden_size=144, num_hidden_layers=6, num_attention_heads=4, intermediate_size=576,
                 subsampling_conv_channels=96, subsampling_factor=4),
    "small": dict(hidden_size=176, num_hidden_layers=16, num_attention_heads=4, intermediate_size=704,
                  subsampling_conv_channels=256),
    "medium": dict(hidden_size=256, num_hidden_layers=16, num_attention_heads=4, intermediate_size=1024,
                   subsampling_conv_channels=256),
    "large": dict(hidden_size=512, num_hidden_layers=17, num_attention_heads=8, intermediate_size=2048,
                  subsampling_conv_channels=256),
}


@strict
class FastConformerConfig(ParakeetEncoderConfig):
    r"""The FastConformer encoder (8x depthwise-separable conv subsampling, rel-pos MHSA, conv module).

    Same fields as [`ParakeetEncoderConfig`]; `FastConformerConfig.from_preset("small")` gives NeMo's sizes.
    """

    model_type = "fastconformer"
    layerdrop: float | int = 0.0  # NeMo's FastConformer trains without stochastic depth by default
    # SpecAugment on the input features, in training mode only (NeMo's parameterisation; 0 masks = off): each
    # utterance gets `freq_masks` bands of 0..freq_width mel bins and `time_masks` spans of 0..time_width frames
    # (time_width < 1: that fraction of the utterance's length) set to 0, the mean of the normalised features.
    spec_augment_freq_masks: int = 0
    spec_augment_freq_width: int = 27
    spec_augment_time_masks: int = 0
    spec_augment_time_width: float = 0.05

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "FastConformerConfig":
        if name not in FASTCONFORMER_PRESETS:
            raise ValueError(f"Unknown FastConformer preset {name!r}; choose one of {sorted(FASTCONFORMER_PRESETS)}")
        return cls(**{**FASTCONFORMER_PRESETS[name], **overrides})

    def validate_sizes(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be even for the sinusoidal positions")
        num_layers = math.log2(self.subsampling_factor)
        if self.subsampling_factor < 2 or num_layers != int(num_layers):
            raise ValueError(f"subsampling_factor ({self.subsampling_factor}) must be a power of 2, at least 2")
        if self.num_mel_bins // self.subsampling_conv_stride ** int(num_layers) < 1:
            raise ValueError(
                f"num_mel_bins ({self.num_mel_bins}) is too small for subsampling_factor {self.subsampling_factor}"
            )
        if self.conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size ({self.conv_kernel_size}) must be odd")

    def validate_spec_augment(self):
        counts = (self.spec_augment_freq_masks, self.spec_augment_freq_width, self.spec_augment_time_masks)
        if min(counts) < 0 or self.spec_augment_time_width < 0:
            raise ValueError(f"SpecAugment mask counts and widths must be >= 0, got {counts} and "
                             f"time width {self.spec_augment_time_width}")

    @property
    def spec_augment(self) -> bool:
        return self.spec_augment_freq_masks > 0 or self.spec_augment_time_masks > 0


@strict
class _FastConformerHeadConfig(PreTrainedConfig):
    """Base of the stage heads: an `encoder_config` sub-config, as Parakeet's heads have."""

    sub_configs_defaults = {"encoder_config": FastConformerConfig}
    encoder_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.initializer_range = self.encoder_config.initializer_range


@strict
class FastConformerMaskedTokenPredictionConfig(_FastConformerHeadConfig):
    r"""Stage 1 (NEST / BEST-RQ): predict random-projection-quantizer tokens of masked input blocks.

    codebook_size (`int`, defaults to 8192): entries per codebook.
    codebook_dim (`int`, defaults to 16): dimension the stacked mel frames are projected to.
    num_codebooks (`int`, defaults to 1): independent quantizers, one target each per encoder frame.
    mask_probability (`float`, defaults to 0.01): probability that a feature frame starts a masked block.
    mask_block_size (`int`, defaults to 40): masked block length in feature frames (10 ms each).
    quantizer_seed (`int`, defaults to 0): seed of the frozen projection and codebooks.
    quantizer (`str`, defaults to `"random_projection"`): where the targets come from. `"random_projection"`:
        BEST-RQ's random projection and random codebooks. `"kmeans"` (an avalign option, HuBERT's first iteration):
        the codebooks are k-means centroids of the stacked frames, fitted on the training speech before stage 1
        (`KMeansQuantizer.fit`); `codebook_dim` is then unused.
    """

    model_type = "fastconformer_mtp"
    codebook_size: int = 8192
    codebook_dim: int = 16
    num_codebooks: int = 1
    mask_probability: float = 0.01
    mask_block_size: int = 40
    quantizer_seed: int = 0
    quantizer: str = "random_projection"

    def validate_masking(self):
        if not 0.0 < self.mask_probability <= 1.0:
            raise ValueError(f"mask_probability ({self.mask_probability}) must be in (0, 1]")
        if self.quantizer not in ("random_projection", "kmeans"):
            raise ValueError(f"quantizer must be 'random_projection' or 'kmeans', got {self.quantizer!r}")
        if self.mask_block_size < 1 or self.codebook_size < 2 or self.num_codebooks < 1 or self.codebook_dim < 1:
            raise ValueError("mask_block_size, codebook_dim and num_codebooks must be >= 1 and codebook_size >= 2")


@strict
class FastConformerAlignmentConfig(_FastConformerHeadConfig):
    r"""Stage 2: pull pooled audio into the embedding space of a frozen vision teacher.

    image_embedding_dim (`int`, defaults to 768): dimension of the teacher's image embeddings.
    pooling (`str`, defaults to `"attention"`): `"mean"` (masked mean) or `"attention"` (learned query).
    projection_hidden_size (`int`, *optional*): hidden width of the projection MLP (default: encoder width x 2).
    alignment_loss (`str`, defaults to `"siglip"`): `"cosine"`, `"infonce"` or `"siglip"` (sigmoid).
    logit_scale_init (`float`, defaults to log(10)): initial log temperature (InfoNCE and SigLIP).
    logit_bias_init (`float`, defaults to -10): initial SigLIP bias.
    alignment_layer (`int`, *optional*): the encoder block (1-based) whose output the head pools; default the last.
    """

    model_type = "fastconformer_alignment"
    image_embedding_dim: int = 768
    pooling: str = "attention"
    projection_hidden_size: int | None = None
    alignment_loss: str = "siglip"
    logit_scale_init: float = math.log(10.0)
    logit_bias_init: float = -10.0
    alignment_layer: int | None = None

    def validate_head(self):
        layers = self.encoder_config.num_hidden_layers
        if self.alignment_layer is not None and not 1 <= self.alignment_layer <= layers:
            raise ValueError(f"alignment_layer must be in 1..{layers} (the encoder's blocks), got {self.alignment_layer}")
        if self.pooling not in ("mean", "attention"):
            raise ValueError(f"pooling must be 'mean' or 'attention', got {self.pooling!r}")
        if self.alignment_loss not in ("cosine", "infonce", "siglip"):
            raise ValueError(f"alignment_loss must be 'cosine', 'infonce' or 'siglip', got {self.alignment_loss!r}")
        if self.image_embedding_dim < 1:
            raise ValueError(f"image_embedding_dim must be positive, got {self.image_embedding_dim}")


# transformers.pipeline("automatic-speech-recognition", model=..., trust_remote_code=True) loads this class
ASR_CUSTOM_PIPELINE = {
    "automatic-speech-recognition": {
        "impl": "pipeline_fastconformer.FastConformerASRPipeline", "pt": ["AutoModel"], "tf": [], "type": "audio",
    }
}


@strict
class FastConformerCTCTDTConfig(_FastConformerHeadConfig):
    r"""Stage 3: hybrid CTC + TDT (token-and-duration transducer); loss = (1 - w) * TDT + w * CTC.

    vocab_size (`int`): tokens including the blank, which is the last id by default (as in Parakeet).
    blank_token_id (`int`, *optional*): defaults to `vocab_size - 1`; also the CTC blank and the pad token.
    decoder_hidden_size (`int`, defaults to 320): prediction network (LSTM) and joint width.
    num_decoder_layers (`int`, defaults to 1): LSTM layers of the prediction network.
    durations (`list[int]`, defaults to 0..4): frame durations the joint predicts.
    sigma (`float`, defaults to 0.0): TDT logit under-normalisation (subtracted from token log-probs).
    ctc_loss_weight (`float`, defaults to 0.3): w above.
    max_symbols_per_step (`int`, defaults to 10): greedy decoding's cap on labels emitted at one frame.
    zero_infinity (`bool`, defaults to True): zero the loss (and gradients) of utterances no alignment can fit.
    fuse_joint_loss (`bool`, defaults to True): never materialise the (B, T, U+1, V+D) joint in training.
    tdt_prune_range (`int`, *optional*): None trains on the exact TDT loss. An integer k >= 2 trains on the pruned
        loss: the joint is computed at k states per frame, in windows placed where the CTC head's posteriors put the
        alignment (`tdt_loss.lattice_windows`). Needs the fused joint, a CTC weight above 0 and durations 0 and 1.
    targets (`str`, defaults to `"native"`): the script of the output: `"native"`, or `"roman"` (uroman-romanized
        text, one Latin output space for every language; a de-romanizer returns the native script).

    Every stage-3 config names `FastConformerASRPipeline` (pipeline_fastconformer.py, shipped with the model) as its
    `custom_pipelines` for "automatic-speech-recognition".
    """

    model_type = "fastconformer_ctc_tdt"
    vocab_size: int = 1025
    blank_token_id: int | None = None
    pad_token_id: int | None = None
    decoder_hidden_size: int = 320
    num_decoder_layers: int = 1
    hidden_act: str = "relu"
    durations: list[int] | tuple[int, ...] = (0, 1, 2, 3, 4)
    sigma: float = 0.0
    ctc_loss_weight: float = 0.3
    tdt_loss_reduction: str = "mean"
    ctc_loss_reduction: str = "mean"
    zero_infinity: bool = True
    max_symbols_per_step: int = 10
    fuse_joint_loss: bool = True
    tdt_prune_range: int | None = None
    targets: str = "native"

    def __post_init__(self, **kwargs):
        if self.blank_token_id is None:
            self.blank_token_id = self.vocab_size - 1
        if self.pad_token_id is None:
            self.pad_token_id = self.blank_token_id
        self.durations = list(self.durations)
        kwargs.setdefault("custom_pipelines", copy.deepcopy(ASR_CUSTOM_PIPELINE))  # transformers edits it in place
        super().__post_init__(**kwargs)

    def validate_heads(self):
        if not 0 <= self.blank_token_id < self.vocab_size:
            raise ValueError(f"blank_token_id ({self.blank_token_id}) must be in [0, vocab_size={self.vocab_size})")
        if not self.durations or min(self.durations) < 0 or sorted(set(self.durations)) != list(self.durations):
            raise ValueError(f"durations must be distinct, ascending and non-negative, got {self.durations}")
        if max(self.durations) < 1:
            raise ValueError("durations need at least one value >= 1, or no blank can advance time")
        if self.targets not in ("native", "roman"):
            raise ValueError(f"targets must be 'native' or 'roman', got {self.targets!r}")
        if not 0.0 <= self.ctc_loss_weight <= 1.0:
            raise ValueError(f"ctc_loss_weight ({self.ctc_loss_weight}) must be in [0, 1]")
        if self.tdt_prune_range is not None:
            self._validate_pruning()

    def _validate_pruning(self):
        needs = {
            "an integer >= 2": self.tdt_prune_range >= 2,
            "fuse_joint_loss=True": self.fuse_joint_loss,
            "a CTC head that trains (ctc_loss_weight > 0), whose posteriors place the windows": self.ctc_loss_weight > 0,
            "durations 0 and 1": {0, 1} <= set(self.durations),
        }
        missing = [need for need, met in needs.items() if not met]
        if missing:
            raise ValueError(f"tdt_prune_range={self.tdt_prune_range} needs {'; '.join(missing)}.")


__all__ = [
    "FASTCONFORMER_PRESETS",
    "FastConformerAlignmentConfig",
    "FastConformerCTCTDTConfig",
    "FastConformerConfig",
    "FastConformerMaskedTokenPredictionConfig",
]
