"""Start a FastConformer encoder from other checkpoints: avalign stages, transformers Parakeet, NeMo `.nemo` archives.

    encoder, report = load_encoder("nvidia/parakeet-tdt-0.6b-v3")   # Hub id, local folder, or a .nemo file
    print(report)                                                    # what was loaded, ignored, missing
"""

import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from huggingface_hub import snapshot_download
from safetensors.torch import load_file

from .configuration_fastconformer import FastConformerConfig
from .modeling_fastconformer import FastConformerModel

# NeMo ConformerEncoder parameter names -> transformers ParakeetEncoder names (applied in order).
NEMO_TO_PARAKEET_KEYS = [
    (r"^pre_encode\.conv\.", "subsampling.layers."),
    (r"^pre_encode\.out\.", "subsampling.linear."),
    (r"\.conv\.batch_norm\.", ".conv.norm."),
    (r"\.self_attn\.linear_q\.", ".self_attn.q_proj."),
    (r"\.self_attn\.linear_k\.", ".self_attn.k_proj."),
    (r"\.self_attn\.linear_v\.", ".self_attn.v_proj."),
    (r"\.self_attn\.linear_out\.", ".self_attn.o_proj."),
    (r"\.self_attn\.linear_pos\.", ".self_attn.relative_k_proj."),
    (r"\.self_attn\.pos_bias_([uv])$", r".self_attn.bias_\1"),
]

# NeMo encoder config keys -> FastConformerConfig fields.
NEMO_ENCODER_CONFIG = {
    "d_model": "hidden_size", "n_heads": "num_attention_heads", "n_layers": "num_hidden_layers",
    "feat_in": "num_mel_bins", "conv_kernel_size": "conv_kernel_size", "subsampling_factor": "subsampling_factor",
    "subsampling_conv_channels": "subsampling_conv_channels", "pos_emb_max_len": "max_position_embeddings",
    "dropout": "dropout", "dropout_emb": "dropout_positions", "dropout_att": "attention_dropout",
    "xscaling": "scale_input",
}
TRANSDUCER_AND_CTC_TYPES = {"parakeet_ctc", "parakeet_tdt", "parakeet_rnnt"}


@dataclass
class EncoderLoadReport:
    source: str
    loaded: int = 0
    ignored: list[str] = field(default_factory=list)  # weights of other parts (decoder, joint, preprocessor)
    missing: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.source}: loaded {self.loaded} encoder tensors, ignored {len(self.ignored)} non-encoder tensors"
        if self.ignored:
            text += f" (e.g. {', '.join(self.ignored[:3])})"
        return text + (f"; MISSING {len(self.missing)}: {', '.join(self.missing[:5])}" if self.missing else "")


def load_encoder(path: str | Path, strict: bool = True) -> tuple[FastConformerModel, EncoderLoadReport]:
    """Load the encoder of any FastConformer checkpoint into `FastConformerModel`.

    `path`: a `.nemo` archive, a local folder or a Hub id of an avalign stage, `ParakeetEncoder`, `ParakeetForCTC`,
    `ParakeetForTDT` or `ParakeetForRNNT` checkpoint. Missing encoder weights raise (`strict`) naming them.
    """
    path = Path(path)
    if path.suffix == ".nemo":
        config, state_dict, prefix = _read_nemo(path)
    else:
        folder = path if path.is_dir() else Path(snapshot_download(str(path)))
        config, state_dict, prefix = _read_transformers(folder)
    encoder = FastConformerModel(config)
    report = EncoderLoadReport(source=str(path))
    encoder_state = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            encoder_state[key[len(prefix):]] = value
        else:
            report.ignored.append(key)
    result = encoder.load_state_dict(encoder_state, strict=False)
    unexpected = [key for key in result.unexpected_keys]
    if unexpected:
        raise ValueError(f"{path}: encoder weights that FastConformerModel does not have: {', '.join(unexpected[:5])}")
    report.missing = [key for key in result.missing_keys if not key.endswith("inv_freq")]
    report.loaded = len(encoder_state)
    if report.missing and strict:
        raise ValueError(f"{path}: the checkpoint lacks encoder weights: {', '.join(report.missing[:5])} ...")
    return encoder.eval(), report


def _read_transformers(folder: Path) -> tuple[FastConformerConfig, dict, str]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json; expected a transformers checkpoint folder or a .nemo file")
    config = json.loads(config_file.read_text())
    model_type = config.get("model_type", "")
    if model_type in ("fastconformer", "parakeet_encoder"):
        encoder_config, prefix = config, ""
    elif "encoder_config" in config and (model_type.startswith("fastconformer") or model_type in TRANSDUCER_AND_CTC_TYPES):
        encoder_config, prefix = config["encoder_config"], "encoder."
    else:
        raise ValueError(f"{folder}: model_type {model_type!r} is not a FastConformer / Parakeet checkpoint")
    fields = FastConformerConfig.__dataclass_fields__
    config = FastConformerConfig(**{k: v for k, v in encoder_config.items() if k in fields and k != "model_type"})
    return config, _read_weights(folder), prefix


def _read_weights(folder: Path) -> dict:
    single = folder / "model.safetensors"
    if single.is_file():
        return load_file(single)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    binary = folder / "pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no model.safetensors, safetensors index or pytorch_model.bin")


def _read_nemo(archive: Path) -> tuple[FastConformerConfig, dict, str]:
    """A `.nemo` file is a tar holding `model_config.yaml` and `model_weights.ckpt` (a torch state dict)."""
    if not tarfile.is_tarfile(archive):
        raise ValueError(f"{archive}: not a .nemo archive (a tar file)")
    with tarfile.open(archive) as tar:
        members = {Path(member.name).name: member for member in tar.getmembers() if member.isfile()}
        for needed in ("model_config.yaml", "model_weights.ckpt"):
            if needed not in members:
                raise ValueError(f"{archive}: no {needed} inside (found {sorted(members)})")
        nemo_config = yaml.safe_load(tar.extractfile(members["model_config.yaml"]))
        weights = io.BytesIO(tar.extractfile(members["model_weights.ckpt"]).read())
    state_dict = torch.load(weights, map_location="cpu", weights_only=True)
    encoder_section = nemo_config.get("encoder") or {}
    config = {NEMO_ENCODER_CONFIG[k]: v for k, v in encoder_section.items() if k in NEMO_ENCODER_CONFIG}
    if config.get("subsampling_conv_channels", -1) == -1:
        config["subsampling_conv_channels"] = config["hidden_size"]
    config["intermediate_size"] = int(config["hidden_size"] * encoder_section.get("ff_expansion_factor", 4))
    config["attention_bias"] = config["convolution_bias"] = encoder_section.get("use_bias", True)
    return FastConformerConfig(**config), {_nemo_key(k): v for k, v in state_dict.items()}, "encoder."


def _nemo_key(key: str) -> str:
    if not key.startswith("encoder."):
        return key
    name = key[len("encoder."):]
    for pattern, replacement in NEMO_TO_PARAKEET_KEYS:
        name = re.sub(pattern, replacement, name)
    return "encoder." + name
