"""Stage 0: the frozen vision teacher and its on-disk image-embedding cache.

Teachers (`image_embedding_cache(teacher, images, cache_dir)` takes each by its name, folder or Hub id):

    tiny SigLIP   the offline default: trained here on the corpus images and their English captions
                  (`train_tiny_siglip`), saved as a folder that loads like a Hub SigLIP2
    any HF model  a Hub id "org/name" or a folder: SigLIP/SigLIP2/CLIP, Qwen3-VL, plain vision models
    "oracle"      upper bound: each image's scene attributes as one-hots (`embed_scene_attributes`)
    random        lower bound: a teacher's architecture with fresh random weights (`save_random_teacher`),
                  saved as a folder like any other teacher

`VisionTeacher` wraps any Hugging Face image encoder (SigLIP/SigLIP2/CLIP through `get_image_features`,
Qwen3-VL-style token sequences or plain vision models through mean pooling). `embed_images` runs each
unique `image_id` through it once and caches the result, keyed by a teacher fingerprint. When no
pretrained teacher is available offline, `train_tiny_siglip` trains a tiny `SiglipModel` on the
corpus images and their English captions and saves it so that `VisionTeacher(output_dir)` loads it
exactly like a Hub SigLIP2.

    python -m avalign.training.teacher --corpus DIR --output-dir OUT [--teacher ID_OR_PATH]
"""

import argparse
import functools
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import PIL.Image
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    get_cosine_schedule_with_warmup,
)
from transformers.utils import ModelOutput

from .corpus.scenes import BACKGROUNDS, COLOURS, KINDS, MAX_COUNT, POSITIONS, Scene
from .corpus.synth import image_caption
from .logs import setup_logging

logger = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.safetensors"
MANIFEST_FILE = "manifest.json"
TEACHER_METRICS_FILE = "teacher_metrics.json"
# Fingerprint entries that decide whether cached embeddings are still valid. The model id/path is
# recorded for messages only: the same weights moved to another folder give the same embeddings.
FINGERPRINT_CHECKED_KEYS = ("config_sha256", "image_processor_sha256", "weights_sha256")
# Serialisation details that do not change what a model computes.
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "_commit_hash"}


# ----------------------------------------------------------------------------- images


def load_rgb_image(image) -> PIL.Image.Image:
    """Decode a PIL image, raw bytes, a file path or a datasets `{"bytes", "path"}` dict to RGB.

    Raises ValueError saying what is wrong when the image is missing or unreadable.
    """
    if isinstance(image, dict):
        image = image.get("bytes") or image.get("path")
    if image is None:
        raise ValueError("image is missing")
    if isinstance(image, bytes):
        image = io.BytesIO(image)
    try:
        image = image if isinstance(image, PIL.Image.Image) else PIL.Image.open(image)
        return image.convert("RGB")  # convert() forces a full decode, so truncated files fail here
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"unreadable image ({type(error).__name__}: {error})") from error


def first_row_per_id(image_ids: Iterable[str | None]) -> dict[str, int]:
    """image_id -> index of its first row (Vaani has many utterances per image); empty ids (no image) left out."""
    first_rows = {}
    for row, image_id in enumerate(image_ids):
        if image_id:
            first_rows.setdefault(image_id, row)
    return first_rows


def _undecoded_columns(dataset: datasets.Dataset | datasets.DatasetDict, columns: list[str]) -> datasets.Dataset:
    """These columns of all splits, concatenated, with the `image` column left undecoded."""
    splits = dataset.values() if isinstance(dataset, datasets.DatasetDict) else [dataset]
    selected = datasets.concatenate_datasets([split.select_columns(columns) for split in splits])
    return selected.cast_column("image", datasets.Image(decode=False))


def unique_captioned_images(
    dataset: datasets.Dataset | datasets.DatasetDict,
) -> tuple[list[PIL.Image.Image], list[str], dict[str, str]]:
    """One (image, caption) per unique non-empty `image_id`, and the ids skipped (image_id -> reason)."""
    columns = _undecoded_columns(dataset, ["image_id", "image", "image_caption"])
    first_rows = first_row_per_id(columns["image_id"])
    images, captions, skipped = [], [], {}
    for item in columns.select(list(first_rows.values())):
        try:
            if not item["image_caption"]:
                raise ValueError("image_caption is empty")
            images.append(load_rgb_image(item["image"]))
            captions.append(item["image_caption"])
        except ValueError as error:
            skipped[item["image_id"]] = str(error)
    return images, captions, skipped


# ----------------------------------------------------------------------------- teacher


def pool_image_features(features) -> torch.Tensor:
    """One vector per image (B, D) from whatever an image encoder returns.

    A `ModelOutput` gives its `pooler_output` (SigLIP/CLIP `get_image_features`) or else its
    `last_hidden_state`; token sequences, (B, T, D) or one (T_i, D) tensor per image (Qwen3-VL),
    are mean-pooled over tokens.
    """
    if isinstance(features, ModelOutput):
        pooled = getattr(features, "pooler_output", None)
        features = pooled if pooled is not None else features.last_hidden_state
    if isinstance(features, (list, tuple)):
        return torch.stack([tokens.mean(dim=0) for tokens in features])
    return features.mean(dim=1) if features.dim() == 3 else features


def _sha256_json(value) -> str:
    def stable(item):
        if isinstance(item, dict):
            return {key: stable(val) for key, val in item.items() if key not in _VOLATILE_CONFIG_KEYS}
        return item

    text = json.dumps(stable(value), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _weights_sha256(model: torch.nn.Module, samples_per_tensor: int = 4096) -> str:
    """Hash of a strided sample of every weight: cheap on multi-GB models, changed by any retraining."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // samples_per_tensor)].cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def teacher_fingerprint(model, image_processor) -> dict[str, str]:
    """What identifies the embeddings a teacher produces: config, image processor and weights."""
    return {
        "model": str(model.name_or_path),
        "config_sha256": _sha256_json(model.config.to_dict()),
        "image_processor_sha256": _sha256_json(image_processor.to_dict()),
        "weights_sha256": _weights_sha256(model),
    }


class VisionTeacher:
    """A frozen Hugging Face image encoder: PIL images -> L2-normalised float32 embeddings (B, D)."""

    def __init__(self, model_id_or_path: str | os.PathLike, device: str | None = None, dtype=None):
        self.image_processor = AutoImageProcessor.from_pretrained(model_id_or_path)
        model = AutoModel.from_pretrained(model_id_or_path, **({"dtype": dtype} if dtype else {}))
        self.fingerprint = teacher_fingerprint(model, self.image_processor)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()

    @functools.cached_property
    def embedding_dim(self) -> int:
        return self.embed([PIL.Image.new("RGB", (64, 64))]).shape[-1]

    @torch.inference_mode()
    def embed(self, images: list[PIL.Image.Image]) -> torch.Tensor:
        """(B, D) float32 on CPU, unit L2 norm."""
        inputs = self.image_processor(images=images, return_tensors="pt")
        inputs = inputs.to(device=self.device, dtype=self.model.dtype)
        if hasattr(self.model, "get_image_features"):
            features = self.model.get_image_features(**inputs)
        else:  # a plain vision model: its token sequence
            features = self.model(**inputs).last_hidden_state
        return F.normalize(pool_image_features(features).float(), dim=-1).cpu()


# ----------------------------------------------------------------------------- embedding cache


@dataclass
class ImageEmbeddings:
    """Cached teacher embeddings joined by `image_id`, with the counters of the call that made them."""

    embeddings: torch.Tensor  # (N, D) float32, unit L2 norm
    index: dict[str, int]  # image_id -> row of `embeddings`
    teacher: dict[str, str]  # fingerprint of the teacher that produced them
    requested_rows: int = 0  # rows (utterances) asked for
    rows_without_image: int = 0  # rows with an empty image_id (the unlabeled pool)
    unique_images: int = 0  # distinct image_ids among them
    teacher_calls: int = 0  # images actually run through the teacher
    skipped: dict[str, str] = field(default_factory=dict)  # image_id -> why it has no embedding

    @property
    def embedding_dim(self) -> int:
        return self.embeddings.shape[1]

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.index

    def lookup(self, image_ids: list[str]) -> torch.Tensor:
        """(B, D) embeddings of these image ids, in order."""
        missing = [image_id for image_id in image_ids if image_id not in self.index]
        if missing:
            raise KeyError(f"no cached embedding for image_id(s) {missing[:5]} ({len(missing)} missing)")
        return self.embeddings[[self.index[image_id] for image_id in image_ids]]

    def counters(self) -> dict[str, int]:
        return {
            "requested_rows": self.requested_rows,
            "rows_without_image": self.rows_without_image,
            "unique_images": self.unique_images,
            "teacher_calls": self.teacher_calls,
            "cache_hits": self.unique_images - self.teacher_calls - len(self.skipped),
            "skipped": len(self.skipped),
            "cached_images": len(self),
        }


def load_image_embeddings(cache_dir: str | os.PathLike) -> ImageEmbeddings:
    """Read a cache written by `embed_images` (no teacher needed, e.g. to join embeddings in stage 2)."""
    cache_dir = Path(cache_dir)
    manifest = json.loads((cache_dir / MANIFEST_FILE).read_text())
    embeddings = load_file(cache_dir / EMBEDDINGS_FILE)["embeddings"]
    image_ids = manifest["image_ids"]
    if embeddings.shape != (len(image_ids), manifest["embedding_dim"]):
        raise ValueError(
            f"corrupt embedding cache {cache_dir}: {EMBEDDINGS_FILE} has shape {tuple(embeddings.shape)}, "
            f"{MANIFEST_FILE} lists {len(image_ids)} ids of dim {manifest['embedding_dim']}; delete the folder"
        )
    index = {image_id: row for row, image_id in enumerate(image_ids)}
    return ImageEmbeddings(embeddings=embeddings, index=index, teacher=manifest["teacher"])


def _save_image_embeddings(cache: ImageEmbeddings, cache_dir: Path) -> None:
    """Write tensor then manifest, each through a temporary file, so a crash never leaves a half file."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    image_ids = sorted(cache.index, key=cache.index.get)
    manifest = {"teacher": cache.teacher, "embedding_dim": cache.embedding_dim, "image_ids": image_ids}
    save_file({"embeddings": cache.embeddings.contiguous()}, cache_dir / f"{EMBEDDINGS_FILE}.tmp")
    os.replace(cache_dir / f"{EMBEDDINGS_FILE}.tmp", cache_dir / EMBEDDINGS_FILE)
    (cache_dir / f"{MANIFEST_FILE}.tmp").write_text(json.dumps(manifest, indent=1))
    os.replace(cache_dir / f"{MANIFEST_FILE}.tmp", cache_dir / MANIFEST_FILE)


def _open_cache(fingerprint: dict[str, str], cache_dir: Path, rebuild_stale: bool) -> ImageEmbeddings:
    """The cache in `cache_dir` if this fingerprint's teacher made it, else an empty one (stale: error or rebuild)."""
    empty = ImageEmbeddings(embeddings=torch.empty(0, 0), index={}, teacher=fingerprint)
    if not (cache_dir / MANIFEST_FILE).exists():
        return empty
    cache = load_image_embeddings(cache_dir)
    differing = [key for key in FINGERPRINT_CHECKED_KEYS if cache.teacher.get(key) != fingerprint[key]]
    if not differing:
        return cache
    message = (
        f"embedding cache {cache_dir} was made by another teacher ({cache.teacher.get('model')!r}, "
        f"dim {cache.embedding_dim}) than {fingerprint['model']!r}: {', '.join(differing)} differ"
    )
    if not rebuild_stale:
        raise ValueError(f"{message}. Pass rebuild_stale=True (--rebuild-stale-cache) to recompute it.")
    logger.warning("%s; rebuilding it", message)
    for name in (MANIFEST_FILE, EMBEDDINGS_FILE):
        (cache_dir / name).unlink()
    return empty


def _append_and_save(cache: ImageEmbeddings, result: ImageEmbeddings, computed: torch.Tensor, cache_dir: Path) -> None:
    """Put the cached rows, then `computed` (N_new, D), into `result` and write it to `cache_dir`."""
    if len(cache) and computed.shape[1] != cache.embedding_dim:
        raise ValueError(f"teacher gives dim {computed.shape[1]}, cache {cache_dir} holds {cache.embedding_dim}")
    result.embeddings = torch.cat([cache.embeddings, computed]) if len(cache) else computed
    _save_image_embeddings(result, cache_dir)


def _warn_skipped(result: ImageEmbeddings, what: str) -> None:
    if result.skipped:
        examples = "; ".join(f"{image_id}: {reason}" for image_id, reason in list(result.skipped.items())[:5])
        logger.warning("skipped %d image(s) %s: %s", len(result.skipped), what, examples)


def _pending_images(images, known: dict, result: ImageEmbeddings) -> tuple[Iterator, int | None]:
    """(image_id, undecoded image) for each unique id not in `known`, and their count when known up front.

    Counts requested rows, rows without an image (empty `image_id`) and unique images into `result`.
    A `Dataset`/`DatasetDict` is read through its `image_id` column first, so that only the images to
    embed are read at all.
    """
    if isinstance(images, (datasets.Dataset, datasets.DatasetDict)):
        columns = _undecoded_columns(images, ["image_id", "image"])
        image_ids = list(columns["image_id"])
        first_rows = first_row_per_id(image_ids)
        result.requested_rows, result.unique_images = len(image_ids), len(first_rows)
        result.rows_without_image = sum(1 for image_id in image_ids if not image_id)
        rows = [row for image_id, row in first_rows.items() if image_id not in known]
        return ((item["image_id"], item["image"]) for item in columns.select(rows)), len(rows)

    def unique_unknown():
        seen = set()
        for image_id, image in images:
            result.requested_rows += 1
            if not image_id:
                result.rows_without_image += 1
            elif image_id not in seen:
                seen.add(image_id)
                result.unique_images += 1
                if image_id not in known:
                    yield image_id, image

    return unique_unknown(), None


def _decoded_batches(pending: Iterator, batch_size: int, skipped: dict[str, str]) -> Iterator[tuple[list, list]]:
    """Batches of (image ids, RGB images); missing or unreadable images go to `skipped`."""
    image_ids, pil_images = [], []
    for image_id, image in pending:
        try:
            pil_images.append(load_rgb_image(image))
            image_ids.append(image_id)
        except ValueError as error:
            skipped[image_id] = str(error)
        if len(image_ids) == batch_size:
            yield image_ids, pil_images
            image_ids, pil_images = [], []
    if image_ids:
        yield image_ids, pil_images


def embed_images(
    teacher: VisionTeacher,
    images: datasets.Dataset | datasets.DatasetDict | Iterable[tuple[str, object]],
    cache_dir: str | os.PathLike,
    batch_size: int = 32,
    rebuild_stale: bool = False,
) -> ImageEmbeddings:
    """Embed every unique `image_id` not yet cached in `cache_dir`, then return the whole cache.

    `images`: a dataset with `image_id` and `image` columns (all splits of a DatasetDict), or an
    iterable of `(image_id, image)` with PIL images, bytes, paths or None. A cache made by a different
    teacher raises ValueError, or is discarded and recomputed when `rebuild_stale`. Missing or
    unreadable images are counted in `.skipped` (image_id -> reason) and logged, never cached.
    """
    cache_dir = Path(cache_dir)
    cache = _open_cache(teacher.fingerprint, cache_dir, rebuild_stale)
    result = ImageEmbeddings(embeddings=cache.embeddings, index=dict(cache.index), teacher=teacher.fingerprint)
    pending, total = _pending_images(images, cache.index, result)
    new_embeddings = []  # (B, D) each
    with tqdm(total=total, desc="vision teacher", unit="img") as progress:
        for image_ids, pil_images in _decoded_batches(pending, batch_size, result.skipped):
            new_embeddings.append(teacher.embed(pil_images))
            result.index.update({image_id: len(result.index) + offset for offset, image_id in enumerate(image_ids)})
            result.teacher_calls += len(image_ids)
            progress.update(len(image_ids))
    if new_embeddings:
        _append_and_save(cache, result, torch.cat(new_embeddings), cache_dir)
    _warn_skipped(result, "with no usable image")
    return result


# ----------------------------------------------------------------------------- tiny SigLIP teacher


def caption_recall_at_1(image_embeddings: torch.Tensor, caption_embeddings: torch.Tensor, captions: list[str]) -> float:
    """Image -> caption recall@1: image i's best-scoring caption has the text of `captions[i]`.

    image_embeddings (N, D) and caption_embeddings (N, D) are row-aligned; identical caption texts
    count as the same caption (two images may share a description).
    """
    best = (image_embeddings @ caption_embeddings.T).argmax(dim=-1)  # (N,)
    return sum(captions[j] == caption for j, caption in zip(best.tolist(), captions)) / len(captions)


def train_caption_tokenizer(captions: list[str]) -> PreTrainedTokenizerFast:
    """Lower-cased word-level tokenizer over the captions, appending an end-of-sequence token."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(captions, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[EOS]"]))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A [EOS]", special_tokens=[("[EOS]", tokenizer.token_to_id("[EOS]"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def tiny_siglip_config(tokenizer, image_size: int, patch_size: int, hidden_size: int, num_layers: int) -> SiglipConfig:
    """Same-sized vision and text towers; the text tower sized to the caption tokenizer."""
    shared = dict(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 32),
    )
    text_config = dict(
        shared,
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,  # SigLIP's text tower pools the last position: no BOS
        eos_token_id=tokenizer.eos_token_id,
    )
    vision_config = dict(shared, image_size=image_size, patch_size=patch_size)
    return SiglipConfig(text_config=text_config, vision_config=vision_config)


def _shuffled_batches(items: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of `items`, reshuffled every epoch."""
    while True:
        yield from items[torch.randperm(len(items), generator=generator)].split(batch_size)


@torch.inference_mode()
def _siglip_caption_recall(model: SiglipModel, pixel_values, input_ids, captions: list[str], rows: list[int]) -> float:
    """Image -> caption recall@1 among the pairs at `rows`."""
    model.eval()
    outputs = model(input_ids=input_ids[rows], pixel_values=pixel_values[rows])
    return caption_recall_at_1(outputs.image_embeds, outputs.text_embeds, [captions[row] for row in rows])


def train_tiny_siglip(
    images: list[PIL.Image.Image],
    captions: list[str],
    output_dir: str | os.PathLike,
    *,
    image_size: int = 64,
    patch_size: int = 16,
    hidden_size: int = 64,
    num_layers: int = 2,
    steps: int = 800,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    held_out_fraction: float = 0.15,
    seed: int = 0,
) -> dict:
    """Train a tiny `SiglipModel` with the sigmoid loss on (image, caption) pairs; save it for `VisionTeacher`.

    A seeded random `held_out_fraction` of the pairs is kept out of training to measure image -> caption
    recall@1. Saves the model, tokenizer, image processor and `teacher_metrics.json` in `output_dir`;
    returns the metrics.
    """
    if len(images) != len(captions) or len(images) < 2:
        raise ValueError(f"need as many images as captions, at least 2; got {len(images)} and {len(captions)}")
    started = time.perf_counter()
    torch.manual_seed(seed)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).tolist()
    num_held_out = max(1, round(held_out_fraction * len(images)))
    held_out, train = order[:num_held_out], order[num_held_out:]

    tokenizer = train_caption_tokenizer([captions[i] for i in train])  # held-out words stay unknown
    tokenizer.model_max_length = max(len(ids) for ids in tokenizer(captions).input_ids)
    input_ids = tokenizer(captions, padding="max_length", return_tensors="pt").input_ids  # (N, L)
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    pixel_values = image_processor(images=images, return_tensors="pt").pixel_values  # (N, 3, H, W)

    model = SiglipModel(tiny_siglip_config(tokenizer, image_size, patch_size, hidden_size, num_layers))
    with torch.no_grad():  # the SigLIP paper's start: temperature 10, bias -10 (few positives per batch)
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.05)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=steps // 20, num_training_steps=steps)
    batches = _shuffled_batches(torch.tensor(train), batch_size, torch.Generator().manual_seed(seed))
    model.train()
    for batch in tqdm(itertools.islice(batches, steps), total=steps, desc="tiny SigLIP", unit="step"):
        loss = model(input_ids=input_ids[batch], pixel_values=pixel_values[batch], return_loss=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()

    recall_at_1 = functools.partial(_siglip_caption_recall, model, pixel_values, input_ids, captions)
    metrics = {
        "caption_recall_at_1": recall_at_1(held_out),
        "chance_recall_at_1": 1 / len({captions[i] for i in held_out}),
        "train_caption_recall_at_1": recall_at_1(train[:num_held_out]),  # as many pairs as held out: comparable
        "held_out_images": len(held_out),
        "train_images": len(train),
        "final_train_loss": loss.item(),
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    output_dir = Path(output_dir)
    for component in (model, tokenizer, image_processor):
        component.save_pretrained(output_dir)
    (output_dir / TEACHER_METRICS_FILE).write_text(json.dumps(metrics, indent=1))
    return metrics


def train_default_teacher(corpus: datasets.DatasetDict, output_dir: str | os.PathLike, **training_kwargs) -> dict:
    """Train the tiny SigLIP on the captioned images of every non-test split (test images stay unseen)."""
    splits = datasets.DatasetDict({name: split for name, split in corpus.items() if not name.startswith("test")})
    images, captions, skipped = unique_captioned_images(splits)
    if skipped:
        logger.warning("tiny SigLIP: skipped %d image(s): %s", len(skipped), list(skipped.items())[:5])
    if not images:
        raise ValueError(f"no captioned images in splits {list(splits)} to train the tiny SigLIP on")
    return train_tiny_siglip(images, captions, output_dir, **training_kwargs)


# ----------------------------------------------------------------------------- random and oracle teachers


def save_random_teacher(like: str | os.PathLike, output_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The lower-bound teacher: `like`'s architecture and image processor with fresh random weights (seeded).

    Saved so that `VisionTeacher(output_dir)` loads it like any teacher; a folder that already holds a
    config.json is kept as it is.
    """
    output_dir = Path(output_dir)
    if (output_dir / "config.json").exists():
        logger.info("reusing the random teacher in %s", output_dir)
        return output_dir
    config = AutoConfig.from_pretrained(like)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(output_dir)
    AutoImageProcessor.from_pretrained(like).save_pretrained(output_dir)
    return output_dir


ORACLE = "oracle"
ORACLE_FINGERPRINT = {
    "model": ORACLE,
    "config_sha256": "oracle-scene-attributes-v1",  # bump when scene_vector's layout changes
    "image_processor_sha256": "none",
    "weights_sha256": "none",
}
# The one-hot blocks of an oracle vector, in Scene's field order: (field, its values)
SCENE_ATTRIBUTES = (
    ("kind", tuple(KINDS)),
    ("colour", tuple(COLOURS)),
    ("count", tuple(range(1, MAX_COUNT + 1))),
    ("position", tuple(POSITIONS)),
    ("background", tuple(BACKGROUNDS)),
)


def all_scenes() -> list[Scene]:
    """Every scene the embedded corpus can render."""
    return [Scene(*values) for values in itertools.product(*(values for _, values in SCENE_ATTRIBUTES))]


@functools.cache
def scenes_by_caption() -> dict[str, Scene]:
    """image_caption -> Scene over every possible scene; ValueError if two scenes share a caption."""
    by_caption = {}
    for scene in all_scenes():
        other = by_caption.setdefault(image_caption(scene), scene)
        if other != scene:
            raise ValueError(f"scenes {other} and {scene} share the caption {image_caption(scene)!r}")
    return by_caption


def scene_vector(scene: Scene) -> torch.Tensor:
    """(D,) float32, unit L2 norm: the concatenated one-hots of kind, colour, count, position and background."""
    one_hots = [
        F.one_hot(torch.tensor(values.index(getattr(scene, name))), len(values)) for name, values in SCENE_ATTRIBUTES
    ]
    return F.normalize(torch.cat(one_hots).float(), dim=0)


def embed_scene_attributes(
    images: datasets.Dataset | datasets.DatasetDict, cache_dir: str | os.PathLike, rebuild_stale: bool = False
) -> ImageEmbeddings:
    """The oracle teacher: `scene_vector` of each unique `image_id`'s scene, read back from its `image_caption`.

    Same cache, counters and stale-cache rules as `embed_images`; images are never decoded. Ids whose first
    row has no known scene caption go to `.skipped` (image_id -> reason) and are logged.
    """
    splits = images.values() if isinstance(images, datasets.DatasetDict) else [images]
    if any("image_caption" not in split.column_names for split in splits):
        raise ValueError("the oracle teacher needs the embedded corpus's image_caption column (training/corpus/)")
    cache_dir = Path(cache_dir)
    cache = _open_cache(ORACLE_FINGERPRINT, cache_dir, rebuild_stale)
    columns = _undecoded_columns(images, ["image_id", "image", "image_caption"])
    image_ids, captions = columns["image_id"], columns["image_caption"]  # two text columns: no image bytes read
    first_rows = first_row_per_id(image_ids)
    result = ImageEmbeddings(
        embeddings=cache.embeddings,
        index=dict(cache.index),
        teacher=ORACLE_FINGERPRINT,
        requested_rows=len(image_ids),
        rows_without_image=sum(1 for image_id in image_ids if not image_id),
        unique_images=len(first_rows),
    )
    new_vectors = []  # (D,) each
    for image_id, row in first_rows.items():
        if image_id in result.index:
            continue
        scene = scenes_by_caption().get(captions[row])
        if scene is None:
            result.skipped[image_id] = f"image_caption {captions[row]!r} is not a scene caption of the embedded corpus"
            continue
        result.index[image_id] = len(result.index)
        new_vectors.append(scene_vector(scene))
    result.teacher_calls = len(new_vectors)
    if new_vectors:
        _append_and_save(cache, result, torch.stack(new_vectors), cache_dir)
    _warn_skipped(result, "without a known scene caption (oracle teacher)")
    return result


# ----------------------------------------------------------------------------- entry point

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # "org/name"


def image_embedding_cache(
    teacher: str,
    images: datasets.Dataset | datasets.DatasetDict,
    cache_dir: str | os.PathLike,
    rebuild_stale: bool = False,
) -> ImageEmbeddings:
    """The image-embedding cache of `teacher`: "oracle" (scene attributes), a model folder or a Hub id."""
    if teacher == ORACLE:
        return embed_scene_attributes(images, cache_dir, rebuild_stale)
    if not ((teacher and Path(teacher).is_dir()) or _HUB_ID.fullmatch(str(teacher))):  # "" is no folder
        raise ValueError(
            f"unknown teacher {teacher!r}: expected {ORACLE!r}, an existing model folder or a Hub id 'org/name'"
        )
    return embed_images(VisionTeacher(teacher), images, cache_dir, rebuild_stale=rebuild_stale)


# ----------------------------------------------------------------------------- CLI


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="DatasetDict folder with image_id, image, image_caption")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--teacher", help="Hub id or folder of a vision model; default: train the tiny SigLIP")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rebuild-stale-cache", action="store_true", help="recompute a cache made by another teacher")
    parser.add_argument("--steps", type=int, help="tiny SigLIP training steps (default: train_tiny_siglip's)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> ImageEmbeddings:
    args = parse_args(argv)
    setup_logging()
    corpus = datasets.load_from_disk(args.corpus)
    teacher_path = args.teacher or args.output_dir / "teacher"
    if args.teacher is None and (teacher_path / "config.json").exists():
        logger.info("reusing the tiny SigLIP in %s", teacher_path)
    elif args.teacher is None:
        steps = {"steps": args.steps} if args.steps else {}
        metrics = train_default_teacher(corpus, teacher_path, seed=args.seed, **steps)
        print(f"tiny SigLIP -> {teacher_path}: {json.dumps(metrics)}")
    teacher = VisionTeacher(teacher_path)
    cache_dir = args.output_dir / "image_embeddings"
    embeddings = embed_images(teacher, corpus, cache_dir, args.batch_size, args.rebuild_stale_cache)
    print(f"image embeddings (dim {embeddings.embedding_dim}) -> {cache_dir}")
    print(json.dumps(embeddings.counters()))
    return embeddings


if __name__ == "__main__":
    main()
