"""Cleaning with counted skips, duration-bucketed batches and the speech collator.

The flow for training:

    dataset = load_embedded(path)["train"]                    # or load_vaani / load_fleurs / load_folder
    dataset, report = validate(dataset, languages={"hi", "en"}, is_covered=partial(uncovered_characters, tok),
                               require_transcript=True, min_seconds=0.5, max_seconds=20.0)
    print(report.summary())                                   # every skipped row is counted, none silently
    sampler = DurationBucketSampler(dataset["duration"], max_seconds_per_batch=240, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=SpeechCollator(feature_extractor, tok))

Bad rows are filtered beforehand by `validate`; the collator still drops (and counts) a row whose audio
cannot be decoded at training time, so that a file changed on disk does not end an epoch.
"""

import io
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch
from datasets import Dataset, Image, IterableDataset, Value
from torch.utils.data import Sampler

from .audio import TARGET_SAMPLING_RATE, DataError, add_noise, change_speed, load_audio, reverberate


SKIP_REASONS = (
    "unreadable", "truncated", "empty", "non_finite", "too_short", "too_long",  # audio (see audio.py)
    "missing_image", "corrupt_image", "empty_transcript", "uncovered_characters", "unknown_language",
    "missing_image_embedding",  # collator only
)  # fmt: skip
CHECKED_COLUMNS = ("audio", "language", "transcript", "image", "image_id", "utterance_id")
IGNORE_INDEX = -100


@dataclass
class SkipReport:
    """Skipped rows counted per reason, with the first few row names of each reason."""

    num_rows: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, reason: str, row: str) -> None:
        self.counts[reason] += 1
        names = self.examples.setdefault(reason, [])
        if len(names) < self.max_examples:
            names.append(row)

    @property
    def num_skipped(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return f"kept all {self.num_rows} rows"
        lines = [f"skipped {self.num_skipped} of {self.num_rows} rows:"]
        for reason, count in self.counts.most_common():
            lines.append(f"  {reason}: {count} (e.g. {', '.join(self.examples[reason])})")
        return "\n".join(lines)


def row_name(row: Mapping, index: int | None = None) -> str:
    """A name for messages: the utterance id, else the audio path, else the row index."""
    audio = row.get("audio")
    path = audio.get("path") if isinstance(audio, Mapping) else audio if isinstance(audio, str) else None
    return row.get("utterance_id") or path or f"row {index}"


def load_image(image, source: str = "<image>") -> PIL.Image.Image:
    """A fully decoded PIL image from a {"bytes", "path"} dict, a path or a PIL image.

    Raises `DataError` with reason "missing_image" (no bytes, no file) or "corrupt_image" (PIL cannot decode it).
    """
    if isinstance(image, PIL.Image.Image):
        return image
    if isinstance(image, Mapping):
        image = image.get("bytes") or image.get("path")
    if not image:
        raise DataError("missing_image", source, "no image bytes and no path")
    try:
        opened = PIL.Image.open(io.BytesIO(image) if isinstance(image, bytes) else image)
        opened.load()
    except FileNotFoundError as error:
        raise DataError("missing_image", source, f"no image file at {image}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError("corrupt_image", source, f"PIL cannot decode the image: {error}") from error
    return opened


def _uncovered_characters(is_covered: Callable, text: str) -> set[str] | None:
    """None when `text` is covered; else the uncovered characters (empty when `is_covered` only says no)."""
    verdict = is_covered(text)
    if isinstance(verdict, (set, frozenset)):
        return set(verdict) or None
    return None if verdict else set()


@dataclass
class RowChecker:
    """Checks one row: language, transcript, tokenizer coverage, image, then audio (the costly one last).

    Returns {"skip_reason", "duration", "row_name"}; `duration` is measured on the decoded audio. With
    `strict` the first bad row raises `DataError` instead.
    """

    languages: frozenset | None = None
    is_covered: Callable | None = None
    require_transcript: bool = False
    require_image: bool = False
    min_seconds: float | None = 0.1
    max_seconds: float | None = None
    target_sr: int = TARGET_SAMPLING_RATE
    strict: bool = False
    image_verdicts: dict = field(default_factory=dict)  # one decode per image, however many rows share it

    def __call__(self, row: Mapping, index: int | None = None) -> dict:
        name = row_name(row, index)
        try:
            duration = self.check(row, name)
        except DataError as error:
            if self.strict:
                raise
            return {"skip_reason": error.reason, "duration": None, "row_name": name}
        return {"skip_reason": "", "duration": duration, "row_name": name}

    def check(self, row: Mapping, name: str) -> float:
        language, transcript = row.get("language"), row.get("transcript") or ""
        if self.languages is not None and language not in self.languages:
            raise DataError("unknown_language", name, f"language {language!r} is not one of {sorted(self.languages)}")
        if self.require_transcript and not transcript.strip():
            raise DataError("empty_transcript", name, "the transcript is empty")
        if self.is_covered is not None and transcript:
            uncovered = _uncovered_characters(self.is_covered, transcript)
            if uncovered is not None:
                raise DataError("uncovered_characters", name, f"the tokenizer does not cover {sorted(uncovered)}")
        image = row.get("image")
        if image is not None:
            self.check_image(image, row.get("image_id") or "", name)
        elif self.require_image:
            raise DataError("missing_image", name, "the row has no image")
        samples = load_audio(row["audio"], self.target_sr, self.min_seconds, self.max_seconds, source=name)
        return len(samples) / self.target_sr

    def check_image(self, image, image_id: str, name: str) -> None:
        key = (image.get("path") if isinstance(image, Mapping) else None) or image_id
        if not key or key not in self.image_verdicts:
            try:
                load_image(image, name)
                self.image_verdicts[key] = None
            except DataError as error:
                self.image_verdicts[key] = (error.reason, error.detail)
        if self.image_verdicts[key] is not None:
            reason, detail = self.image_verdicts[key]
            raise DataError(reason, name, detail)


def validate(
    dataset: Dataset | IterableDataset,
    *,
    languages: Iterable[str] | None = None,
    is_covered: Callable[[str], bool | set] | None = None,
    require_transcript: bool = False,
    require_image: bool = False,
    min_seconds: float | None = 0.1,
    max_seconds: float | None = None,
    target_sr: int = TARGET_SAMPLING_RATE,
    strict: bool = False,
    num_proc: int | None = None,
) -> tuple[Dataset | IterableDataset, SkipReport]:
    """Drop the rows that cannot train, counting each skip by reason; `strict` raises on the first instead.

    Checks (reason codes in `SKIP_REASONS`): language in `languages`; a non-empty transcript when
    `require_transcript`; `is_covered(transcript)` -> bool, or -> set of uncovered characters (empty = covered),
    e.g. `partial(uncovered_characters, tokenizer)`; the image decodes (and exists when `require_image`);
    the audio decodes, is finite and lasts [`min_seconds`, `max_seconds`].

    A `Dataset` is checked at once (`num_proc` workers); kept rows get `duration` measured on the decoded audio.
    An `IterableDataset` is filtered lazily: its report fills as the stream is consumed (in this process).
    """
    checker = RowChecker(
        languages=frozenset(languages) if languages is not None else None, is_covered=is_covered,
        require_transcript=require_transcript, require_image=require_image, min_seconds=min_seconds,
        max_seconds=max_seconds, target_sr=target_sr, strict=strict,
    )  # fmt: skip
    report = SkipReport()
    if isinstance(dataset, IterableDataset):
        return dataset.filter(_counting_filter(checker, report), with_indices=True), report

    view = dataset.select_columns([column for column in CHECKED_COLUMNS if column in dataset.column_names])
    if isinstance(view.features.get("image"), Image):
        view = view.cast_column("image", Image(decode=False))
    outcomes = view.map(
        checker, with_indices=True, remove_columns=view.column_names, num_proc=num_proc, load_from_cache_file=False,
        desc="validate",
    )  # fmt: skip
    report.num_rows = len(outcomes)
    for reason, name in zip(outcomes["skip_reason"], outcomes["row_name"]):
        if reason:
            report.add(reason, name)
    kept = [index for index, reason in enumerate(outcomes["skip_reason"]) if not reason]
    if "duration" in dataset.column_names:
        dataset = dataset.remove_columns("duration")
    dataset = dataset.add_column("duration", list(outcomes["duration"]), feature=Value("float64"))
    return dataset.select(kept), report


def _counting_filter(checker: RowChecker, report: SkipReport) -> Callable:
    def keep(row: Mapping, index: int) -> bool:
        outcome = checker(row, index)
        report.num_rows += 1
        if outcome["skip_reason"]:
            report.add(outcome["skip_reason"], outcome["row_name"])
        return not outcome["skip_reason"]

    return keep


class DurationBucketSampler(Sampler[list[int]]):
    """Batches of similar durations under a padded-seconds budget: len(batch) * max duration <= budget.

    Indices are sorted by duration and cut into `num_buckets` equal-count buckets; each epoch shuffles each
    bucket, packs it greedily into batches and shuffles the batch order, all from (`seed`, epoch), so every
    process of a distributed run sees the same batches. `num_buckets=1` gives random batches under the budget.
    `drop_last` drops the last (under-full) batch of each bucket.

    With accelerate: `accelerator.prepare(DataLoader(dataset, batch_sampler=sampler, collate_fn=collator))`.
    The sampler has no `batch_size` (batches vary), so accelerate shards whole batches across processes
    (`split_batches=False`, the default). Before each epoch call `sampler.set_epoch(epoch)` and, on the
    prepared loader, `loader.set_epoch(epoch)` (accelerate re-sets the epoch of a single-process loader from
    its own counter). To resume mid-epoch call `sampler.skip_first_batches(batches_done)` (or accelerate's
    `skip_first_batches(loader, batches_done)`): the next pass starts there. Count `batches_done` in the training
    loop, not from the sampler: the DataLoader draws batches ahead of the ones consumed.
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_seconds_per_batch: float,
        num_buckets: int = 10,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        max_batch_size: int | None = None,
    ):
        self.durations = np.asarray(durations, dtype=np.float64)  # (N,)
        if not len(self.durations):
            raise ValueError("no durations: the dataset is empty")
        bad = np.flatnonzero(~np.isfinite(self.durations) | (self.durations <= 0))
        if len(bad):
            raise ValueError(f"durations must be finite and > 0: row {bad[0]} has {durations[bad[0]]!r}")
        too_long = np.flatnonzero(self.durations > max_seconds_per_batch)
        if len(too_long):
            raise ValueError(
                f"row {too_long[0]} lasts {self.durations[too_long[0]]:.2f} s, over max_seconds_per_batch="
                f"{max_seconds_per_batch}: filter it out first (validate(..., max_seconds=...))"
            )
        self.max_seconds_per_batch = max_seconds_per_batch
        self.buckets = np.array_split(np.argsort(self.durations, kind="stable"), min(num_buckets, len(self.durations)))
        self.shuffle, self.seed, self.drop_last, self.max_batch_size = shuffle, seed, drop_last, max_batch_size
        self.epoch = 0
        self.batches_to_skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_first_batches(self, num_batches: int) -> None:
        """The next pass starts at batch `num_batches` of the current epoch (once; later passes are whole)."""
        self.batches_to_skip = num_batches

    def _pack(self, indices: np.ndarray) -> list[list[int]]:
        batches, batch, longest = [], [], 0.0
        for index in indices.tolist():
            longest_with = max(longest, self.durations[index])
            full = self.max_batch_size is not None and len(batch) == self.max_batch_size
            if batch and (full or (len(batch) + 1) * longest_with > self.max_seconds_per_batch):
                batches.append(batch)
                batch, longest_with = [], self.durations[index]
            batch.append(index)
            longest = longest_with
        if batch and not self.drop_last:
            batches.append(batch)
        return batches

    def epoch_batches(self) -> list[list[int]]:
        """All batches of the current epoch, in order (deterministic in `seed` and `epoch`)."""
        generator = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for bucket in self.buckets:
            batches += self._pack(generator.permutation(bucket) if self.shuffle else bucket)
        if self.shuffle:
            batches = [batches[i] for i in generator.permutation(len(batches))]
        return batches

    def __iter__(self):
        batches = self.epoch_batches()[self.batches_to_skip :]
        self.batches_to_skip = 0
        yield from batches

    def __len__(self) -> int:
        return max(len(self.epoch_batches()) - self.batches_to_skip, 0)


def padding_fraction(batches: Iterable[Sequence[int]], durations: Sequence[float]) -> float:
    """Padded frames / total frames when each batch is padded to its longest utterance."""
    durations = np.asarray(durations, dtype=np.float64)
    padded = real = 0.0
    for batch in batches:
        batch_durations = durations[list(batch)]
        padded += len(batch_durations) * batch_durations.max()
        real += batch_durations.sum()
    return 1.0 - real / padded


@dataclass
class AudioAugmentation:
    """Training-time waveform augmentation (an avalign option): speed perturbation, reverberation, additive noise.

    Each utterance's draws come from a generator seeded by (`seed`, epoch, utterance id), so an epoch is augmented
    alike whether or not the run was resumed, and differently from the last epoch. All off by default.
    """

    speed_perturbation: float = 0.0  # factor drawn uniformly in [1 - x, 1 + x]
    reverb_probability: float = 0.0
    rt60_seconds: tuple[float, float] = (0.2, 0.8)
    noise_probability: float = 0.0
    snr_db: tuple[float, float] = (5.0, 30.0)
    seed: int = 0

    @property
    def enabled(self) -> bool:
        return self.speed_perturbation > 0 or self.reverb_probability > 0 or self.noise_probability > 0

    def __call__(self, samples: np.ndarray, utterance_id: str, epoch: int) -> np.ndarray:
        """(T,) float32 at 16 kHz -> (T',) float32."""
        rng = np.random.default_rng([self.seed, epoch, zlib.crc32(utterance_id.encode())])
        if self.speed_perturbation > 0:
            samples = change_speed(samples, rng.uniform(1 - self.speed_perturbation, 1 + self.speed_perturbation))
        if rng.random() < self.reverb_probability:
            samples = reverberate(samples, rng, self.rt60_seconds)
        if rng.random() < self.noise_probability:
            samples = add_noise(samples, rng, self.snr_db)
        return samples.astype(np.float32)


class SpeechCollator:
    """Rows of the common schema -> model inputs.

    Returns `input_features` (B, T, 80) log-mel from `ParakeetFeatureExtractor`, `attention_mask` (B, T),
    `labels` (B, U) padded with -100 when a tokenizer is given, `image_embeddings` (B, D) looked up by
    `image_id` when a cache is given ({image_id: (D,)} or (image_ids, (N, D) tensor)), `language`,
    `utterance_id`, `image_id` and `transcript` lists, and `skipped`: [(reason, row)] for rows dropped from this batch (audio that no longer
    decodes, or no embedding for its image). Skips are also counted in `self.skip_report` (in this process;
    with DataLoader workers count `batch["skipped"]` in the loop). A batch whose every row is dropped is
    returned as None: the loop skips it.
    """

    def __init__(
        self, feature_extractor, tokenizer=None, image_embeddings=None, augmentation: AudioAugmentation | None = None
    ):
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.augmentation = augmentation if augmentation is not None and augmentation.enabled else None
        self.epoch = 0
        if isinstance(image_embeddings, tuple):
            image_ids, embeddings = image_embeddings
            image_embeddings = dict(zip(image_ids, embeddings))
        self.image_embeddings = image_embeddings
        self.skip_report = SkipReport()

    def set_epoch(self, epoch: int) -> None:
        """The epoch the augmentation draws for (the training loop sets it with the sampler's)."""
        self.epoch = epoch

    def _waveform(self, row: Mapping, name: str) -> np.ndarray:
        if self.image_embeddings is not None and row.get("image_id") not in self.image_embeddings:
            raise DataError("missing_image_embedding", name, f"no embedding for image_id {row.get('image_id')!r}")
        samples = load_audio(row["audio"], self.feature_extractor.sampling_rate, source=name)
        return self.augmentation(samples, name, self.epoch) if self.augmentation else samples

    def __call__(self, rows: list[Mapping]) -> dict | None:
        kept, waveforms, skipped = [], [], []
        for position, row in enumerate(rows):
            name = row_name(row, position)
            try:
                waveforms.append(self._waveform(row, name))
                kept.append(row)
            except DataError as error:
                skipped.append((error.reason, name))
                self.skip_report.add(error.reason, name)
        self.skip_report.num_rows += len(rows)
        if not kept:
            return None
        sampling_rate = self.feature_extractor.sampling_rate
        features = self.feature_extractor(
            waveforms, sampling_rate=sampling_rate, return_attention_mask=True, return_tensors="pt"
        )
        batch = {
            "input_features": features["input_features"],  # (B, T, 80)
            "attention_mask": features["attention_mask"],  # (B, T)
            "language": [row.get("language", "") for row in kept],
            "utterance_id": [row.get("utterance_id", "") for row in kept],
            "image_id": [row.get("image_id", "") for row in kept],
            "transcript": [row.get("transcript", "") for row in kept],
            "skipped": skipped,
        }
        if self.tokenizer is not None:
            batch["labels"] = pad_labels(self.tokenizer([row["transcript"] for row in kept])["input_ids"])
        if self.image_embeddings is not None:
            vectors = [torch.as_tensor(self.image_embeddings[row["image_id"]]) for row in kept]
            batch["image_embeddings"] = torch.stack(vectors).float()  # (B, D)
        return batch


def pad_labels(token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Token id lists -> (B, U) long tensor padded with -100 (ignored by the losses)."""
    labels = torch.full((len(token_ids), max((len(ids) for ids in token_ids), default=0)), IGNORE_INDEX)
    for row, ids in enumerate(token_ids):
        labels[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return labels
