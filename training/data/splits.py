"""What the stage scripts share on the data side: read splits of a corpus on disk, clean them with counted skips,
and the feature extractor every stage uses."""

import logging
from collections.abc import Sequence
from functools import partial

from datasets import Dataset, concatenate_datasets
from transformers import ParakeetFeatureExtractor

from avalign.modeling import uncovered_characters

from .batching import SkipReport, validate
from .loaders import load_embedded

logger = logging.getLogger("avalign")


def load_splits(corpus_dir: str, splits: Sequence[str], languages: Sequence[str] | None = None) -> Dataset:
    """The named splits of a DatasetDict saved on disk (the embedded corpus or any loader's output), concatenated."""
    corpus = load_embedded(corpus_dir)
    missing = [split for split in splits if split not in corpus]
    if missing:
        raise ValueError(f"{corpus_dir}: no split(s) {missing}; it has {sorted(corpus)}")
    dataset = concatenate_datasets([corpus[split] for split in splits]) if len(splits) > 1 else corpus[splits[0]]
    if languages:
        dataset = dataset.filter(lambda language: language in set(languages), input_columns="language")
    return dataset


def clean(
    dataset: Dataset,
    name: str,
    tokenizer=None,
    require_transcript: bool = False,
    require_image: bool = False,
    min_seconds: float = 0.3,
    max_seconds: float = 30.0,
) -> tuple[Dataset, SkipReport]:
    """Drop rows no stage can use, counting each skip by reason, and log the count."""
    is_covered = partial(uncovered_characters, tokenizer) if tokenizer is not None else None
    dataset, report = validate(
        dataset, is_covered=is_covered, require_transcript=require_transcript, require_image=require_image,
        min_seconds=min_seconds, max_seconds=max_seconds,
    )  # fmt: skip
    logger.info("%s: %s", name, report.summary())
    if len(dataset) == 0:
        raise ValueError(f"{name}: no usable rows left ({report.summary()})")
    return dataset, report


def feature_extractor() -> ParakeetFeatureExtractor:
    """80-bin log-mel at 16 kHz, 10 ms hop: Parakeet's, so every stage and exported model share it."""
    return ParakeetFeatureExtractor()
