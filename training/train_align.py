"""Stage 2: align pooled audio with the frozen vision teacher's embedding of the prompt image. No transcripts.

    accelerate launch training/train_align.py --config training/configs/align_demo.yaml \
        --corpus runs/demo/corpus --init_encoder runs/demo/pretrain --teacher runs/demo/teacher \
        --embeddings_dir runs/demo/embeddings --output_dir runs/demo/align

Every encoder layer is updated, together with the alignment head. Audio -> image retrieval recall@1/@5 on held-out
pairs (images never seen in training) is measured before and after.
"""

import logging
from dataclasses import dataclass, field

import torch
from datasets import DatasetDict

from accelerate.utils import set_seed

from avalign.modeling import FastConformerAlignmentConfig, FastConformerForImageAlignment
from avalign.training.corpus import clean, feature_extractor, initial_encoder, load_splits
from avalign.training.data import DurationBucketSampler, SpeechCollator
from avalign.training.teacher import VisionTeacher, embed_images
from avalign.training.trainer import StageArguments, StageTrainer, arguments_to_dict, parse_arguments, setup_logging

logger = logging.getLogger("avalign")


@dataclass
class AlignArguments:
    corpus: str = field(metadata={"help": "a DatasetDict folder in the common schema, with image_id and image"})
    init_encoder: str = field(metadata={"help": "stage-1 output (or a Parakeet / .nemo encoder)"})
    teacher: str = field(metadata={"help": "vision teacher: Hub id or folder (SigLIP2, Qwen3-VL, the tiny default)"})
    embeddings_dir: str = field(metadata={"help": "image-embedding cache, shared across stages and runs"})
    train_splits: list[str] = field(default_factory=lambda: ["paired"])
    eval_split: str = "test"
    languages: list[str] | None = None
    pooling: str = "attention"
    alignment_loss: str = "siglip"
    projection_hidden_size: int | None = None
    min_seconds: float = 0.3
    max_seconds: float = 30.0


def image_embedding_table(args: AlignArguments, datasets_with_images) -> tuple[dict, dict]:
    """{image_id: (E,) embedding} for every image the stage uses (each unique image through the teacher once)."""
    cache = embed_images(VisionTeacher(args.teacher), datasets_with_images, args.embeddings_dir)
    logger.info("vision teacher: %s", cache.counters())
    table = {image_id: cache.embeddings[row] for image_id, row in cache.index.items()}
    return table, cache.counters()


def build_model(args: AlignArguments, image_embedding_dim: int) -> FastConformerForImageAlignment:
    encoder = initial_encoder(args.init_encoder)
    config = FastConformerAlignmentConfig(
        encoder_config=encoder.config.to_dict(), image_embedding_dim=image_embedding_dim, pooling=args.pooling,
        alignment_loss=args.alignment_loss, projection_hidden_size=args.projection_hidden_size,
    )  # fmt: skip
    model = FastConformerForImageAlignment(config)
    model.load_encoder_state(encoder)
    return model


def group_ids(image_ids: list[str]) -> torch.Tensor:
    """(B,) ints equal where rows share an image, so the loss treats them as positives of each other."""
    first = {}
    return torch.tensor([first.setdefault(image_id, len(first)) for image_id in image_ids])


def alignment_loss(model, batch):
    outputs = model(
        batch["input_features"], attention_mask=batch["attention_mask"], image_embeddings=batch["image_embeddings"],
        image_groups=group_ids(batch["image_id"]).to(batch["input_features"].device),
    )  # fmt: skip
    return outputs.loss, {}


def spread(unit_vectors: torch.Tensor) -> float:
    """(N, E) unit vectors -> sqrt of their total variance: 0 when all are the same (a collapsed embedding), about 1
    when they point every which way."""
    return unit_vectors.var(0, correction=0).sum().sqrt().item()


def retrieval_recall(dataset, collator, image_table: dict, max_seconds_per_batch: float, ks=(1, 5)):
    """Audio -> image retrieval among the held-out set's distinct images: recall@k over utterances, and the spread of
    the audio embeddings next to the images' (an audio spread near 0 means every utterance is embedded alike)."""
    image_ids = sorted({image_id for image_id in dataset["image_id"] if image_id in image_table})
    gallery = torch.nn.functional.normalize(torch.stack([image_table[image_id] for image_id in image_ids]), dim=-1)
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    sampler = DurationBucketSampler(dataset["duration"], max_seconds_per_batch, shuffle=False)

    def evaluate(model) -> dict:
        ranks, embeddings = [], []
        for indices in sampler:
            batch = collator([dataset[i] for i in indices])
            if batch is None:
                continue
            audio, _ = model.embed_audio(batch["input_features"].to(model.device), batch["attention_mask"].to(model.device))
            embeddings.append(audio.float().cpu())
            scores = embeddings[-1] @ gallery.T  # (B, I)
            truth = torch.tensor([position[image_id] for image_id in batch["image_id"]])
            ranks += (scores > scores.gather(1, truth[:, None])).sum(1).tolist()  # images scored above the true one
        ranks = torch.tensor(ranks)
        return {f"recall@{k}": (ranks < k).float().mean().item() for k in ks} | {
            "num_images": len(image_ids), "audio_spread": spread(torch.cat(embeddings)), "image_spread": spread(gallery)}

    return evaluate


def main(argv=None):
    setup_logging()
    args, training = parse_arguments((AlignArguments, StageArguments), argv)
    set_seed(training.seed)  # before any weight is initialised
    extractor = feature_extractor()
    limits = dict(min_seconds=args.min_seconds, max_seconds=args.max_seconds, require_image=True)
    train, train_report = clean(load_splits(args.corpus, args.train_splits, args.languages), "align/train", **limits)
    held_out, _ = clean(load_splits(args.corpus, [args.eval_split], args.languages), "align/eval", **limits)
    image_table, teacher_counters = image_embedding_table(args, DatasetDict(train=train, held_out=held_out))
    image_dim = next(iter(image_table.values())).shape[-1]
    model = build_model(args, image_dim)
    evaluate = retrieval_recall(held_out, SpeechCollator(extractor, image_embeddings=image_table),
                                image_table, training.max_seconds_per_batch)  # fmt: skip
    with torch.no_grad():
        recall_before = evaluate(model.eval())
    logger.info("retrieval before alignment: %s", recall_before)
    trainer = StageTrainer(
        training, model.train(), train, SpeechCollator(extractor, image_embeddings=image_table), alignment_loss,
        evaluate=evaluate, stage_name="align", hyperparameters=arguments_to_dict(args),
    )  # fmt: skip
    result = trainer.train()
    logger.info("retrieval after alignment: %s", result.eval_metrics)
    if result.eval_metrics and result.eval_metrics["audio_spread"] < 0.1 * result.eval_metrics["image_spread"]:
        logger.warning("the audio embeddings have collapsed (spread %.4f vs %.4f for the images): every utterance is "
                       "embedded alike; try more steps, a larger batch or another --alignment_loss",
                       result.eval_metrics["audio_spread"], result.eval_metrics["image_spread"])
    trainer.save_final(extractor, metrics={
        **result.to_dict(), "recall_before": recall_before, "recall_after": result.eval_metrics,
        "teacher": teacher_counters, "data_skips": dict(train_report.counts),
    })  # fmt: skip
    return result


if __name__ == "__main__":
    main()
