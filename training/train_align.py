"""Stage 2: align pooled audio with the frozen vision teacher's embedding of the prompt image. No transcripts.

    accelerate launch training/train_align.py --config training/configs/align_demo.yaml \
        --corpus runs/demo/corpus --init_encoder runs/demo/pretrain --teacher runs/demo/teacher \
        --embeddings_dir runs/demo/embeddings --output_dir runs/demo/align

Every encoder layer is updated, together with the alignment head (the paper's recipe, the default). Audio -> image
retrieval recall@1/@5 on held-out pairs (images never seen in training) is measured before and after.

The alignment study's options (issue 19; docs/experiments.md), each off by default:

    --joint_ssl true           keep stage 1's masked-token loss on the same batches: L = L_ssl + lambda * L_align
                               (FaST-VGS+); the quantizer and decoder come from the stage-1 checkpoint
    --alignment_weight 0.5     lambda
    --alignment_layer 4        pool from this encoder block (1-based) instead of the last
    --freeze_layers 3          the subsampling and the 3 lowest blocks stay frozen
    --negatives language       negatives only within a clip's language, so that language identity cannot solve it
    --image_pairing shuffled   the control: each image replaced, consistently, by another image of the same language
    --teacher oracle           the corpus's scene attributes as the image embedding (the upper bound)
"""

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from torch import nn

from accelerate.utils import set_seed

from avalign.modeling import (
    FastConformerAlignmentConfig,
    FastConformerForImageAlignment,
    FastConformerForMaskedTokenPrediction,
)
from avalign.training.data.batching import DurationBucketSampler, SpeechCollator
from avalign.training.data.splits import clean, feature_extractor, load_splits
from avalign.training.logs import setup_logging
from avalign.training.teacher import image_embedding_cache
from avalign.training.train_pretrain import load_stage1
from avalign.training.trainer import AugmentationArguments, StageArguments, StageTrainer
from avalign.training.trainer import arguments_to_dict, initial_encoder, parse_arguments

logger = logging.getLogger("avalign")


@dataclass
class AlignArguments:
    corpus: str = field(metadata={"help": "a DatasetDict folder in the common schema, with image_id and image"})
    init_encoder: str = field(metadata={"help": "stage-1 output (or a Parakeet / .nemo encoder)"})
    teacher: str = field(metadata={"help": "vision teacher: Hub id or folder (SigLIP2, Qwen3-VL, the tiny default, a "
                                           "random one), or `oracle` (the embedded corpus's scene attributes)"})
    embeddings_dir: str = field(metadata={"help": "image-embedding cache, shared across stages and runs"})
    train_splits: list[str] = field(default_factory=lambda: ["paired"])
    eval_split: str = field(default="dev", metadata={"help": "the learning curve during training (select on it)"})
    report_split: str = field(default="test", metadata={"help": "retrieval before and after alignment, and examples"})
    languages: list[str] | None = None
    pooling: str = "attention"
    alignment_loss: str = "siglip"
    projection_hidden_size: int | None = None
    min_seconds: float = 0.3
    max_seconds: float = 30.0
    joint_ssl: bool = field(default=False, metadata={
        "help": "keep stage 1's masked-token loss on the same batches: L = L_ssl + alignment_weight * L_align"})
    alignment_weight: float = field(default=1.0, metadata={"help": "lambda, the weight of the alignment loss"})
    alignment_layer: int | None = field(default=None, metadata={
        "help": "the encoder block (1-based) the alignment head pools from (default: the last)"})
    freeze_layers: int = field(default=0, metadata={
        "help": "keep the subsampling and this many of the lowest encoder blocks frozen (0: every layer trains)"})
    negatives: str = field(default="batch", metadata={
        "help": "batch (every other image in the batch) or language (only images of the clip's own language)"})
    image_pairing: str = field(default="prompt", metadata={
        "help": "prompt (each clip's own image) or shuffled (the control: another image of the same language)"})

    def __post_init__(self):  # clear errors before training; the layer ranges are checked against the encoder
        if self.alignment_weight < 0:
            raise ValueError(f"--alignment_weight (lambda) must be >= 0, got {self.alignment_weight}")
        if self.freeze_layers < 0:
            raise ValueError(f"--freeze_layers must be >= 0, got {self.freeze_layers}")
        for name, choices in (("negatives", NEGATIVES), ("image_pairing", IMAGE_PAIRINGS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")


NEGATIVES = ("batch", "language")
IMAGE_PAIRINGS = ("prompt", "shuffled")


def image_embedding_table(args: AlignArguments, datasets_with_images) -> tuple[dict, dict]:
    """{image_id: (E,) embedding} for every image the stage uses (each unique image through the teacher once)."""
    cache = image_embedding_cache(args.teacher, datasets_with_images, args.embeddings_dir)
    logger.info("vision teacher: %s", cache.counters())
    table = {image_id: cache.embeddings[row] for image_id, row in cache.index.items()}
    return table, cache.counters()


def build_model(
    args: AlignArguments, image_embedding_dim: int, augmentation: AugmentationArguments
) -> "FastConformerForImageAlignment | JointAlignment":
    encoder = initial_encoder(args.init_encoder)
    num_layers = encoder.config.num_hidden_layers
    if args.freeze_layers > num_layers:
        raise ValueError(f"--freeze_layers {args.freeze_layers} is more than the encoder's {num_layers} blocks")
    config = FastConformerAlignmentConfig(
        encoder_config=augmentation.encoder_config(encoder.config), image_embedding_dim=image_embedding_dim,
        pooling=args.pooling, alignment_loss=args.alignment_loss, projection_hidden_size=args.projection_hidden_size,
        alignment_layer=args.alignment_layer,
    )  # fmt: skip
    model = FastConformerForImageAlignment(config)
    model.load_encoder_state(encoder)
    freeze_lowest_layers(model.encoder, args.freeze_layers)
    return JointAlignment(model, load_stage1(args.init_encoder, "--joint_ssl")) if args.joint_ssl else model


def freeze_lowest_layers(encoder: nn.Module, count: int) -> None:
    """Alignment depth: the subsampling and the `count` lowest blocks keep stage 1's weights (no gradient)."""
    if count == 0:
        return
    for module in (encoder.subsampling, *encoder.layers[:count]):
        module.requires_grad_(False)


class JointAlignment(nn.Module):
    """Stage 2 that keeps stage 1's task: the alignment model and stage 1's heads on one shared encoder.

    forward -> (alignment output, masked-token output), both through the same encoder weights, so that one backward
    pass trains the encoder on both losses. `save_pretrained` saves the alignment model, as plain stage 2 does.
    """

    def __init__(self, alignment: FastConformerForImageAlignment, stage1: FastConformerForMaskedTokenPrediction):
        super().__init__()
        del stage1.encoder  # the alignment model's encoder is the one both losses train
        self.alignment, self.stage1 = alignment, stage1

    @property
    def encoder(self) -> nn.Module:
        return self.alignment.encoder

    @property
    def device(self) -> torch.device:
        return self.alignment.device

    def embed_audio(self, *args, **kwargs):
        return self.alignment.embed_audio(*args, **kwargs)

    def save_pretrained(self, *args, **kwargs):
        return self.alignment.save_pretrained(*args, **kwargs)

    def forward(self, input_features, attention_mask=None, **alignment_inputs):
        aligned = self.alignment(input_features, attention_mask=attention_mask, **alignment_inputs)
        masked = self.stage1.masked_prediction(self.alignment.encoder, input_features, attention_mask)
        return aligned, masked


def group_ids(keys: list[str]) -> torch.Tensor:
    """(B,) ints equal where rows share a key (an image: positives of each other; a language: a negatives group)."""
    first = {}
    return torch.tensor([first.setdefault(key, len(first)) for key in keys])


def alignment_objective(args: AlignArguments):
    """compute_loss(model, batch): lambda * L_align, plus L_ssl with --joint_ssl; negatives per --negatives."""

    def compute_loss(model, batch):
        device = batch["input_features"].device
        negative_groups = group_ids(batch["language"]).to(device) if args.negatives == "language" else None
        outputs = model(
            batch["input_features"], attention_mask=batch["attention_mask"], image_embeddings=batch["image_embeddings"],
            image_groups=group_ids(batch["image_id"]).to(device), negative_groups=negative_groups,
        )  # fmt: skip
        if not args.joint_ssl:
            return args.alignment_weight * outputs.loss, {}
        aligned, masked = outputs
        loss = masked.loss + args.alignment_weight * aligned.loss
        return loss, {"alignment_loss": aligned.loss.item(), "masked_loss": masked.loss.item()}

    return compute_loss


def shuffled_images(dataset: Dataset, seed: int) -> Dataset:
    """The `shuffled` control: every image_id replaced by another image of the same language, consistently (the clips
    of one image all move to the same other image), so the batches keep their structure but the content is wrong."""
    rng = np.random.default_rng(seed)
    languages, image_ids = dataset["language"], dataset["image_id"]
    replacement = {}
    for language in sorted(set(languages)):
        order = sorted({image for image, lang in zip(image_ids, languages) if lang == language and image})
        order = [order[i] for i in rng.permutation(len(order))]
        replacement |= {image: order[(i + 1) % len(order)] for i, image in enumerate(order)}  # a cycle: none stays
    return dataset.remove_columns("image_id").add_column("image_id", [replacement.get(i, i) for i in image_ids])


def spread(unit_vectors: torch.Tensor) -> float:
    """(N, E) unit vectors -> sqrt of their total variance: 0 when all are the same (a collapsed embedding), about 1
    when they point every which way."""
    return unit_vectors.var(0, correction=0).sum().sqrt().item()


class AudioToImageRetrieval:
    """Audio -> image retrieval among a held-out split's distinct images (never seen in training).

    `retrieval(model)`: recall@k over utterances, and the spread of the audio embeddings next to the images' (an audio
    spread near 0 means every utterance is embedded alike). From one `embedded = retrieval.embed(model)`, both
    `retrieval.metrics(*embedded)` and `retrieval.examples(*embedded)` (the top images of a few clips).
    """

    def __init__(self, dataset, collator, image_table: dict, max_seconds_per_batch: float, ks=(1, 5)):
        self.dataset, self.collator, self.ks = dataset, collator, ks
        self.row_of = {utterance_id: row for row, utterance_id in enumerate(dataset["utterance_id"])}
        self.image_of_row = dataset["image_id"]
        self.image_ids = sorted({image_id for image_id in self.image_of_row if image_id in image_table})
        gallery = torch.stack([image_table[image_id] for image_id in self.image_ids])
        self.gallery = F.normalize(gallery, dim=-1)  # (I, E)
        self.position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.sampler = DurationBucketSampler(dataset["duration"], max_seconds_per_batch, shuffle=False)

    def embed(self, model) -> tuple[list[int], torch.Tensor]:
        """(dataset rows, (N, E) unit audio embeddings) of every row that decodes."""
        rows, embeddings = [], []
        for indices in self.sampler:
            batch = self.collator([self.dataset[i] for i in indices])
            if batch is None:
                continue
            rows += [self.row_of[utterance_id] for utterance_id in batch["utterance_id"]]  # the rows that decoded
            audio, _ = model.embed_audio(batch["input_features"].to(model.device), batch["attention_mask"].to(model.device))
            embeddings.append(audio.float().cpu())
        return rows, torch.cat(embeddings)

    def __call__(self, model) -> dict:
        return self.metrics(*self.embed(model))

    def metrics(self, rows: list[int], audio: torch.Tensor) -> dict:
        scores = audio @ self.gallery.T  # (N, I)
        truth = torch.tensor([self.position[self.image_of_row[row]] for row in rows])
        ranks = (scores > scores.gather(1, truth[:, None])).sum(1)  # images scored above the true one
        return {f"recall@{k}": (ranks < k).float().mean().item() for k in self.ks} | {
            "num_images": len(self.image_ids), "audio_spread": spread(audio), "image_spread": spread(self.gallery)}

    def examples(self, rows: list[int], audio: torch.Tensor, per_language: int = 1, top_k: int = 3) -> list[dict]:
        """The first `per_language` clips of each language with their `top_k` images (id and cosine score)."""
        scores = audio @ self.gallery.T
        examples, taken = [], {}
        for row, row_scores in zip(rows, scores):
            record = self.dataset[row]
            if taken.setdefault(record["language"], 0) == per_language:
                continue
            taken[record["language"]] += 1
            best = row_scores.topk(min(top_k, len(self.image_ids)))
            examples.append({
                "utterance_id": record["utterance_id"], "language": record["language"],
                "transcript": record["transcript"], "image_id": record["image_id"],
                "top_images": [self.image_ids[i] for i in best.indices.tolist()], "top_scores": best.values.tolist(),
            })  # fmt: skip
        return examples


def main(argv=None):
    setup_logging()
    args, augmentation, training = parse_arguments((AlignArguments, AugmentationArguments, StageArguments), argv)
    set_seed(training.seed)  # before any weight is initialised
    extractor = feature_extractor()
    limits = dict(min_seconds=args.min_seconds, max_seconds=args.max_seconds, require_image=True)
    train, train_report = clean(load_splits(args.corpus, args.train_splits, args.languages), "align/train", **limits)
    if args.image_pairing == "shuffled":
        train = shuffled_images(train, training.seed)
    held_out = {split: clean(load_splits(args.corpus, [split], args.languages), f"align/{split}", **limits)[0]
                for split in dict.fromkeys([args.eval_split, args.report_split])}  # fmt: skip
    image_table, teacher_counters = image_embedding_table(args, DatasetDict(train=train, **held_out))
    image_dim = next(iter(image_table.values())).shape[-1]
    model = build_model(args, image_dim, augmentation)
    collator = SpeechCollator(extractor, image_embeddings=image_table)
    curve, report = (AudioToImageRetrieval(held_out[split], collator, image_table, training.max_seconds_per_batch)
                     for split in (args.eval_split, args.report_split))  # fmt: skip
    with torch.no_grad():
        recall_before = report(model.eval())
    logger.info("retrieval on %s before alignment: %s", args.report_split, recall_before)
    augmented = SpeechCollator(extractor, image_embeddings=image_table,
                               augmentation=augmentation.audio_augmentation(training.seed))  # fmt: skip
    trainer = StageTrainer(
        training, model.train(), train, augmented, alignment_objective(args),
        evaluate=curve, stage_name="align", hyperparameters=arguments_to_dict(args, augmentation),
    )  # fmt: skip
    result = trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    with torch.no_grad():
        embedded = report.embed(model)
    recall_after, examples = report.metrics(*embedded), report.examples(*embedded)
    logger.info("retrieval on %s after alignment: %s", args.report_split, recall_after)
    if recall_after["audio_spread"] < 0.1 * recall_after["image_spread"]:
        logger.warning("the audio embeddings have collapsed (spread %.4f vs %.4f for the images): every utterance is "
                       "embedded alike; try more steps, a larger batch or another --alignment_loss",
                       recall_after["audio_spread"], recall_after["image_spread"])  # fmt: skip
    trainer.save_final(extractor, metrics={
        **result.to_dict(), "report_split": args.report_split, "recall_before": recall_before,
        "recall_after": recall_after, "retrieval_examples": examples, "teacher": teacher_counters,
        "data_skips": dict(train_report.counts),
    })  # fmt: skip
    return result


if __name__ == "__main__":
    main()
