"""Stage 1: self-supervised pretraining of a FastConformer encoder (NEST / BEST-RQ) on unlabeled speech.

    accelerate launch training/train_pretrain.py --config training/configs/pretrain_demo.yaml \
        --corpus runs/demo/corpus --output_dir runs/demo/pretrain
"""

import logging
import time
from dataclasses import dataclass, field

import torch
from accelerate.utils import set_seed
from transformers import AutoConfig

from avalign.modeling import (
    FastConformerConfig,
    FastConformerForMaskedTokenPrediction,
    FastConformerMaskedTokenPredictionConfig,
    stack_frames,
)
from avalign.training.data.batching import DurationBucketSampler, SpeechCollator
from avalign.training.data.splits import clean, feature_extractor, load_splits
from avalign.training.logs import setup_logging
from avalign.training.trainer import AugmentationArguments, StageArguments, StageTrainer
from avalign.training.trainer import arguments_to_dict, initial_encoder, parse_arguments

logger = logging.getLogger("avalign")


@dataclass
class PretrainArguments:
    corpus: str = field(metadata={"help": "a DatasetDict folder in the common schema (e.g. the embedded corpus)"})
    train_splits: list[str] = field(default_factory=lambda: ["unlabeled", "paired", "train"])
    eval_split: str = "dev"
    languages: list[str] | None = None
    encoder_preset: str = "demo"
    subsampling_factor: int | None = field(default=None, metadata={"help": "override the preset's (4 or 8)"})
    init_encoder: str | None = field(default=None, metadata={"help": "start from this encoder (Parakeet, .nemo, avalign)"})
    init_model: str | None = field(default=None, metadata={
        "help": "continue a stage-1 checkpoint: its encoder, quantizer and decoder (the study's `continued` control)"})
    codebook_size: int = 8192
    codebook_dim: int = 16
    num_codebooks: int = 1
    mask_probability: float = 0.01
    mask_block_size: int = 40
    quantizer: str = field(default="random_projection", metadata={
        "help": "random_projection (BEST-RQ) or kmeans (HuBERT's first iteration: centroids of the training speech)"})
    kmeans_utterances: int = field(default=500, metadata={"help": "utterances the k-means quantizer is fitted on"})
    min_seconds: float = 0.3
    max_seconds: float = 30.0

    def __post_init__(self):
        if self.init_model and self.init_encoder:
            raise ValueError("give --init_model (a whole stage-1 checkpoint) or --init_encoder, not both")
        if self.quantizer == "kmeans" and self.kmeans_utterances < 1:
            raise ValueError(f"--kmeans_utterances must be >= 1 with --quantizer kmeans, got {self.kmeans_utterances}")


def build_model(args: PretrainArguments) -> FastConformerForMaskedTokenPrediction:
    if args.init_model:
        return load_stage1(args.init_model, "--init_model")
    encoder = initial_encoder(args.init_encoder) if args.init_encoder else None
    if encoder is not None:
        encoder_config = encoder.config
    else:
        overrides = {"subsampling_factor": args.subsampling_factor} if args.subsampling_factor else {}
        encoder_config = FastConformerConfig.from_preset(args.encoder_preset, **overrides)
    config = FastConformerMaskedTokenPredictionConfig(
        encoder_config=AugmentationArguments().encoder_config(encoder_config),  # masking is the task: no SpecAugment
        codebook_size=args.codebook_size, codebook_dim=args.codebook_dim,
        num_codebooks=args.num_codebooks, mask_probability=args.mask_probability, mask_block_size=args.mask_block_size,
        quantizer=args.quantizer,
    )  # fmt: skip
    model = FastConformerForMaskedTokenPrediction(config)
    if encoder is not None:
        model.load_encoder_state(encoder)
    return model


def load_stage1(path: str, flag: str) -> FastConformerForMaskedTokenPrediction:
    """A whole stage-1 checkpoint (encoder, quantizer, decoder), for `flag` (named in the error when it is not one)."""
    expected = FastConformerMaskedTokenPredictionConfig.model_type
    try:
        model_type = AutoConfig.from_pretrained(path).model_type
    except (OSError, ValueError) as error:
        model_type = f"unreadable ({type(error).__name__}: {error})"
    if model_type != expected:
        raise ValueError(f"{flag} needs a stage-1 checkpoint with its quantizer and decoder (model_type {expected!r}); "
                         f"{path} is {model_type!r}")  # fmt: skip
    return FastConformerForMaskedTokenPrediction.from_pretrained(path)


def fit_kmeans_quantizer(model, dataset, collator, num_utterances: int, seed: int) -> None:
    """Fit the k-means quantizer on the stacked frames of `num_utterances` random training utterances."""
    rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num_utterances].tolist()
    factor, frames = model.config.encoder_config.subsampling_factor, []
    for start in range(0, len(rows), 32):
        batch = collator([dataset[i] for i in rows[start : start + 32]])
        if batch is None:
            continue
        lengths = model.encoder.encoder_lengths(batch["attention_mask"].bool())
        stacked = stack_frames(batch["input_features"], factor, int(lengths.max()))  # (B, T', F * S)
        frames.append(stacked[torch.arange(stacked.shape[1])[None] < lengths[:, None]])
    frames = torch.cat(frames)
    started = time.perf_counter()
    model.quantizer.fit(frames)
    logger.info("k-means quantizer: %d codes fitted on %d frames of %d utterances in %.1f s",
                model.config.codebook_size, len(frames), len(rows), time.perf_counter() - started)  # fmt: skip


def masked_prediction_loss(model, batch):
    outputs = model(batch["input_features"], attention_mask=batch["attention_mask"])
    accuracy = (outputs.logits.argmax(-1) == outputs.targets)[outputs.mask].float().mean()
    return outputs.loss, {"masked_accuracy": accuracy.item()}


def masked_prediction_metrics(dataset, collator, max_seconds_per_batch: float, seed: int = 0):
    """Loss and accuracy of the masked-token prediction on held-out speech, with masks drawn from a fixed seed."""
    sampler = DurationBucketSampler(dataset["duration"], max_seconds_per_batch, shuffle=False)

    def evaluate(model) -> dict:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        total_loss = correct = frames = 0.0
        for indices in sampler:
            batch = collator([dataset[i] for i in indices])
            if batch is None:
                continue
            outputs = model(batch["input_features"].to(model.device), attention_mask=batch["attention_mask"].to(model.device))
            count = outputs.mask.sum().item()
            total_loss += outputs.loss.item() * count
            correct += (outputs.logits.argmax(-1) == outputs.targets)[outputs.mask].float().sum().item()
            frames += count * outputs.targets.shape[-1]
        torch.random.set_rng_state(generator_state)
        return {"masked_loss": total_loss / max(frames, 1), "masked_accuracy": correct / max(frames, 1)}

    return evaluate


def main(argv=None):
    setup_logging()
    args, training = parse_arguments((PretrainArguments, StageArguments), argv)
    set_seed(training.seed)  # before any weight is initialised
    extractor = feature_extractor()
    train, train_report = clean(load_splits(args.corpus, args.train_splits, args.languages), "pretrain/train",
                                min_seconds=args.min_seconds, max_seconds=args.max_seconds)  # fmt: skip
    held_out, _ = clean(load_splits(args.corpus, [args.eval_split], args.languages), "pretrain/eval",
                        min_seconds=args.min_seconds, max_seconds=args.max_seconds)  # fmt: skip
    collator = SpeechCollator(extractor)
    model = build_model(args)
    if model.config.quantizer == "kmeans" and not args.init_model:  # a continued model keeps its fitted codebook
        fit_kmeans_quantizer(model, train, collator, args.kmeans_utterances, training.seed)
    trainer = StageTrainer(
        training, model, train, collator, masked_prediction_loss,
        evaluate=masked_prediction_metrics(held_out, SpeechCollator(extractor), training.max_seconds_per_batch),
        stage_name="pretrain", hyperparameters=arguments_to_dict(args),
    )  # fmt: skip
    result = trainer.train()
    trainer.save_final(extractor, metrics={**result.to_dict(), "data_skips": dict(train_report.counts)})
    return result


if __name__ == "__main__":
    main()
