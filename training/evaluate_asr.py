"""Evaluate stage-3 ASR models: transcribe the test splits, score WER / CER per language, compare two systems.

    python -m avalign.training.evaluate_asr --model DIR/asr/aligned-f1.0 --model DIR/asr/baseline-f1.0 \
        --name aligned --name baseline --corpus DIR/corpus --splits test test_ood --decoding tdt ctc \
        --fraction 1.0 --output-dir DIR/eval/f1.0

Writes, for one fine-tuning fraction:

    OUT/results.json                                 {"asr": {name: {fraction: {split: {decoding: scores}}}},
                                                      "comparison": {fraction: {split: {decoding: {...}}}}}
                                                     (and any other comparison asked for, under its own key)
    OUT/predictions-<name>-<split>-<decoding>.jsonl  one record per utterance: utterance_id, language, reference,
                                                     hypothesis, duration
    OUT/report.md, OUT/plots/*.png                   tables and figures (training/evaluation/report.py)

`scores` is `metrics.score`'s {"overall", "per_language"} plus "skipped": {reason: rows} for rows whose audio did
not decode (counted, logged, never fatal). With two models, "comparison" holds the paired bootstrap of the first
minus the second (`metrics.compare`) on `--metric` (CER by default: it is defined alike for every script); the
pipeline also asks for "scratch_comparison" (baseline minus a stage-3 model trained from a random encoder).
Text normalisation and statistics: see training/evaluation/metrics.py.
"""

import argparse
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer

import avalign.modeling  # noqa: F401  (registers the FastConformer classes with the Auto classes)

from .data.batching import DurationBucketSampler, SkipReport, SpeechCollator
from .data.splits import load_splits
from .evaluation.metrics import METRICS, compare, score
from .evaluation.report import write_report
from .logs import setup_logging
from .roman.romanize import with_targets

logger = logging.getLogger("avalign")

DECODINGS = ("tdt", "ctc")
RECORD_COLUMNS = ("audio", "language", "transcript", "utterance_id", "duration")


def load_asr_model(folder: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode on `device`, feature extractor, tokenizer) from a stage-3 folder."""
    model = AutoModel.from_pretrained(folder).to(device).eval()
    return model, AutoFeatureExtractor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def check_evaluation_set(dataset: Dataset, name: str = "dataset") -> None:
    """Raises unless `dataset` has the columns scoring needs and unique utterance ids (the bootstrap joins on them)."""
    missing = [column for column in RECORD_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; it has {dataset.column_names}")
    seen = set()
    for utterance_id in dataset["utterance_id"]:
        if not utterance_id or utterance_id in seen:
            raise ValueError(f"{name}: utterance_id {utterance_id!r} is empty or repeated; ids must be unique")
        seen.add(utterance_id)


@torch.no_grad()
def transcribe_dataset(
    model,
    feature_extractor,
    tokenizer,
    dataset: Dataset,
    decoding: str = "tdt",
    max_seconds_per_batch: float = 120.0,
    skip_report: SkipReport | None = None,
) -> list[dict]:
    """Greedy transcripts of a stage-3 model (`transcribe_batches` with its TDT or CTC decoding)."""

    def transcribe(batch: dict) -> list[str]:
        device = model.device
        output = model.transcribe(batch["input_features"].to(device), batch["attention_mask"].to(device), decoding)
        return tokenizer.batch_decode(output.sequences, group_tokens=False, skip_special_tokens=True)

    model.eval()
    return transcribe_batches(transcribe, feature_extractor, dataset, max_seconds_per_batch, skip_report)


@torch.no_grad()
def transcribe_batches(
    transcribe: Callable[[dict], list[str]],
    feature_extractor,
    dataset: Dataset,
    max_seconds_per_batch: float = 120.0,
    skip_report: SkipReport | None = None,
) -> list[dict]:
    """`transcribe(batch) -> texts` over every row whose audio decodes, in duration-bucketed batches (a batch:
    `SpeechCollator`'s, with `input_features`, `attention_mask`, `language` ...).

    -> [{"utterance_id", "language", "reference", "hypothesis", "duration"}] in dataset order. Rows whose audio
    fails to decode are left out, counted in `skip_report` (when given) and logged.
    """
    check_evaluation_set(dataset)
    dataset = dataset.select_columns(list(RECORD_COLUMNS))
    hypotheses = {}
    for batch in speech_batches(feature_extractor, dataset, max_seconds_per_batch, skip_report, "transcribe_batches"):
        hypotheses.update(zip(batch["utterance_id"], transcribe(batch)))
    rows = dataset.remove_columns("audio")
    return [
        {"utterance_id": row["utterance_id"], "language": row["language"], "reference": row["transcript"],
         "hypothesis": hypotheses[row["utterance_id"]], "duration": row["duration"]}
        for row in rows if row["utterance_id"] in hypotheses
    ]  # fmt: skip


def speech_batches(feature_extractor, dataset: Dataset, max_seconds_per_batch: float,
                   skip_report: SkipReport | None = None, name: str = "speech_batches") -> Iterator[dict]:  # fmt: skip
    """`SpeechCollator` batches of every row of `dataset` whose audio decodes, in one pass, sorted by duration and
    packed greedily under the padded-seconds budget (little padding). Rows that fail to decode are counted in
    `skip_report` (when given) and logged, under `name`, at the end."""
    collator = SpeechCollator(feature_extractor)
    collator.skip_report = skip_report if skip_report is not None else SkipReport()
    sampler = DurationBucketSampler(dataset["duration"], max_seconds_per_batch, num_buckets=1, shuffle=False)
    for batch in DataLoader(dataset, batch_sampler=sampler, collate_fn=collator):
        if batch is not None:  # None: every row of the batch was skipped
            yield batch
    if collator.skip_report.num_skipped:
        logger.warning("%s: %s", name, collator.skip_report.summary())


def transcript_examples(records: Mapping[str, Sequence[Mapping]], per_language: int = 2) -> list[dict]:
    """The first `per_language` utterances of each language as every system wrote them: [{"utterance_id",
    "language", "reference", system: hypothesis, ...}]. records: {system: transcribe_dataset's records}."""
    hypotheses = {system: {r["utterance_id"]: r["hypothesis"] for r in rs} for system, rs in records.items()}
    examples, taken = [], {}
    for record in next(iter(records.values())):
        if taken.setdefault(record["language"], 0) == per_language:
            continue
        taken[record["language"]] += 1
        examples.append({key: record[key] for key in ("utterance_id", "language", "reference")}
                        | {system: by_id.get(record["utterance_id"], "") for system, by_id in hypotheses.items()})
    return examples


def write_jsonl(records: Sequence[Mapping], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def fraction_key(fraction: float) -> str:
    """0.1 -> "0.1", 1 -> "1.0": the fraction keys of results.json."""
    return str(float(fraction))


def evaluate_models(
    models: Mapping[str, str | Path],
    corpus_dir: str | Path,
    output_dir: str | Path,
    splits: Sequence[str] = ("test", "test_ood"),
    decodings: Sequence[str] = DECODINGS,
    fraction: float = 1.0,
    metric: str = "cer",
    num_resamples: int = 1000,
    seed: int = 0,
    max_seconds_per_batch: float = 120.0,
    device: str | None = None,
    romanization_cache: str | Path | None = None,
    comparisons: Mapping[str, tuple[str, str]] | None = None,
) -> dict:
    """Transcribe and score every {name: stage-3 folder} on `splits` x `decodings`; write the predictions.

    `comparisons` {results key: (system a, system b)}: the paired bootstraps of a - b to run (default, with two
    models: {"comparison": (first, second)}). -> {"asr": ..., key: ... for each comparison} for `fraction`.
    """
    if comparisons is None:
        comparisons = {"comparison": tuple(models)} if len(models) == 2 else {}
    strangers = sorted({name for pair in comparisons.values() for name in pair} - set(models))
    if not models or strangers:
        raise ValueError(f"comparisons name systems that are not evaluated: {strangers} (models: {list(models)})")
    unknown = sorted(set(decodings) - set(DECODINGS))
    if unknown or metric not in METRICS:
        raise ValueError(f"decodings must be among {DECODINGS} (got {list(decodings)}), metric among {METRICS}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    output_dir, key = Path(output_dir), fraction_key(fraction)
    output_dir.mkdir(parents=True, exist_ok=True)
    datasets = {split: load_splits(str(corpus_dir), [split]) for split in splits}
    results, records = {"asr": {}}, {}
    for name, folder in models.items():
        model, feature_extractor, tokenizer = load_asr_model(folder, device)
        targets = model.config.targets  # a roman-target model is scored against romanized references
        for split, dataset in datasets.items():
            dataset = with_targets(dataset, targets, romanization_cache)
            for decoding in decodings:
                logger.info("evaluate %s on %s (%d rows) with %s decoding", name, split, len(dataset), decoding)
                skip_report = SkipReport()
                predictions = transcribe_dataset(
                    model, feature_extractor, tokenizer, dataset, decoding, max_seconds_per_batch, skip_report
                )
                write_jsonl(predictions, output_dir / f"predictions-{name}-{split}-{decoding}.jsonl")
                scores = {**score(predictions), "skipped": dict(skip_report.counts)}
                results["asr"].setdefault(name, {}).setdefault(key, {}).setdefault(split, {})[decoding] = scores
                records[name, split, decoding] = predictions
    results["examples"] = {key: {split: {decoding: transcript_examples(
        {name: records[name, split, decoding] for name in models}) for decoding in decodings} for split in splits}}
    for kind, pair in comparisons.items():
        results[kind] = {key: {
            split: {decoding: compare({name: records[name, split, decoding] for name in pair}, metric,
                                      num_resamples, seed)
                    for decoding in decodings}
            for split in splits
        }}  # fmt: skip
    return results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="stage-3 folder; give two to compare")
    parser.add_argument("--name", action="append", help="one name per --model (default: the folder names)")
    parser.add_argument("--corpus", required=True, help="DatasetDict folder (save_to_disk), e.g. DIR/corpus")
    parser.add_argument("--splits", nargs="+", default=["test", "test_ood"])
    parser.add_argument("--decoding", nargs="+", choices=DECODINGS, default=list(DECODINGS))
    parser.add_argument("--fraction", type=float, default=1.0, help="fine-tuning fraction: the results.json key")
    parser.add_argument("--metric", choices=METRICS, default="cer", help="metric of the paired bootstrap")
    parser.add_argument("--num-resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds-per-batch", type=float, default=120.0)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args(argv)
    args.name = args.name or [Path(folder).name for folder in args.model]
    if len(args.name) != len(args.model) or len(set(args.name)) != len(args.name):
        parser.error(f"give one distinct --name per --model: {args.name} for {len(args.model)} model(s)")
    return args


def main(argv=None) -> dict:
    setup_logging()
    args = parse_args(argv)
    results = evaluate_models(
        dict(zip(args.name, args.model)), args.corpus, args.output_dir, args.splits, args.decoding, args.fraction,
        args.metric, args.num_resamples, args.seed, args.max_seconds_per_batch, args.device,
    )  # fmt: skip
    output_dir = Path(args.output_dir)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_report(results, output_dir)
    print((output_dir / "report.md").read_text(encoding="utf-8"))
    return results


if __name__ == "__main__":
    main()
