"""ASR scoring: corpus-level WER / CER per language, paired bootstrap between two systems.

The normalisation and the error rates are those of the `evaluate` metric module `asr_error_rates` (its docstring
defines them); `score` computes its rates through that module, loaded offline by path with `evaluate.load`, so the
figures in results.json are the ones a user gets from the metric.

`paired_bootstrap` resamples utterances with replacement (the same draw for both systems) and recomputes the
corpus-level difference a - b each time. The interval is the 2.5 / 97.5 percentile of the resampled differences;
the two-sided p-value is twice the fraction of resampled differences on the far side of 0 (counting ties),
with the +1 correction of Davison & Hinkley, (k + 1) / (R + 1), and clipped to 1: it is never exactly 0 and is 1
for identical systems.
"""

import functools
from collections.abc import Iterable, Mapping, Sequence

import evaluate
import numpy as np

from . import asr_error_rates
from .asr_error_rates import METRICS, corpus_rate, normalize_transcript, utterance_edits

__all__ = ["METRICS", "asr_metric", "compare", "normalize_transcript", "paired_bootstrap", "rate_interval", "score"]


@functools.cache
def asr_metric() -> evaluate.EvaluationModule:
    """The scoring as an `evaluate` metric: the module that ships with avalign, loaded by path (works offline)."""
    return evaluate.load(asr_error_rates.__file__)


def edit_counts(records: Sequence[Mapping], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance (edits (N,), reference lengths (N,)) of records with "reference" and "hypothesis"."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    counts = [utterance_edits(record["reference"], record["hypothesis"], metric) for record in records]
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 2)
    return counts[:, 0], counts[:, 1]


def by_language(records: Iterable[Mapping]) -> dict[str, list[Mapping]]:
    """{language: records}, languages sorted."""
    groups = {}
    for record in records:
        groups.setdefault(record["language"], []).append(record)
    return dict(sorted(groups.items()))


def distinct_texts(records: Sequence[Mapping]) -> dict:
    """How many distinct texts the system wrote next to how many distinct references there are: a system that
    writes one fixed string for every clip has 1 distinct hypothesis, whatever its error rate."""
    distinct = lambda side: len({normalize_transcript(record[side]) for record in records})  # noqa: E731
    return {"distinct_hypotheses": distinct("hypothesis"), "distinct_references": distinct("reference")}


def score(records: Sequence[Mapping]) -> dict:
    """{"overall": {"wer", "cer", "num_utterances", "distinct_*"}, "per_language": {language: {...}}}, corpus-level
    rates from the `asr_error_rates` metric."""
    if not records:
        raise ValueError("no records to score")
    rates = asr_metric().compute(predictions=[record["hypothesis"] for record in records],
                                 references=[record["reference"] for record in records],
                                 languages=[record["language"] for record in records])  # fmt: skip
    per_language = {language: {**rates["per_language"][language], **distinct_texts(group)}
                    for language, group in by_language(records).items()}  # fmt: skip
    overall = {metric: rates[metric] for metric in (*METRICS, "num_utterances")}
    return {"overall": {**overall, **distinct_texts(records)}, "per_language": per_language}


def paired_utterances(records_a: Sequence[Mapping], records_b: Sequence[Mapping]) -> list[tuple[Mapping, Mapping]]:
    """The records of both systems joined by utterance_id (order of a); raises unless the sets and references match."""
    by_id_b = {record["utterance_id"]: record for record in records_b}
    ids_a = [record["utterance_id"] for record in records_a]
    if len(set(ids_a)) != len(ids_a) or len(by_id_b) != len(records_b):
        raise ValueError("utterance_id values must be unique within each system's records")
    only_a, only_b = sorted(set(ids_a) - set(by_id_b)), sorted(set(by_id_b) - set(ids_a))
    if only_a or only_b:
        raise ValueError(
            f"the systems were scored on different utterances: {len(only_a)} only in a (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in b (e.g. {only_b[:3]})"
        )
    pairs = [(record, by_id_b[record["utterance_id"]]) for record in records_a]
    for a, b in pairs:
        same_reference = normalize_transcript(a["reference"]) == normalize_transcript(b["reference"])
        if not same_reference or a["language"] != b["language"]:
            raise ValueError(f"utterance {a['utterance_id']}: the systems have different references or languages")
    return pairs


def resample_counts(num_utterances: int, num_resamples: int, seed: int) -> np.ndarray:
    """(R, N): how often each utterance is drawn in each resample (N draws with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_utterances, size=(num_resamples, num_utterances))
    flat = (draws + np.arange(num_resamples)[:, None] * num_utterances).ravel()  # row r's draws offset by r * N
    return np.bincount(flat, minlength=num_resamples * num_utterances).reshape(num_resamples, num_utterances)


def paired_bootstrap(
    records_a: Sequence[Mapping],
    records_b: Sequence[Mapping],
    metric: str = "cer",
    num_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Corpus-level difference a - b with a 95 % percentile interval and a two-sided p-value (module docstring).

    -> {"metric", "a", "b", "difference", "ci_low", "ci_high", "p_value", "num_utterances"}.
    """
    pairs = paired_utterances(records_a, records_b)
    edits_a, lengths = edit_counts([a for a, _ in pairs], metric)
    edits_b, _ = edit_counts([b for _, b in pairs], metric)
    rate_a, rate_b = corpus_rate(edits_a, lengths), corpus_rate(edits_b, lengths)

    weights = resample_counts(len(pairs), num_resamples, seed)  # (R, N)
    resampled_lengths = np.maximum(weights @ lengths, 1)  # (R,); 0 only if every draw has an empty reference
    differences = weights @ (edits_a - edits_b) / resampled_lengths  # (R,)
    return bootstrap_summary(metric, rate_a, rate_b, differences) | {"num_utterances": len(pairs)}


def rate_interval(records: Sequence[Mapping], metric: str = "cer", num_resamples: int = 1000, seed: int = 0) -> dict:
    """One system's corpus rate with its 95 % percentile interval over utterances resampled with replacement (the
    same resamples as the paired bootstrap's for the same seed). -> {metric, "ci_low", "ci_high"}."""
    edits, lengths = edit_counts(records, metric)
    weights = resample_counts(len(records), num_resamples, seed)  # (R, N)
    rates = weights @ edits / np.maximum(weights @ lengths, 1)  # (R,)
    ci_low, ci_high = np.percentile(rates, [2.5, 97.5])
    return {metric: corpus_rate(edits, lengths), "ci_low": float(ci_low), "ci_high": float(ci_high)}


def bootstrap_summary(metric: str, rate_a: float, rate_b: float, differences: np.ndarray) -> dict:
    """The point difference a - b, the 95 % percentile interval and the two-sided p-value of resampled differences."""
    far_side = int(min((differences <= 0).sum(), (differences >= 0).sum()))
    ci_low, ci_high = np.percentile(differences, [2.5, 97.5])
    return {"metric": metric, "a": rate_a, "b": rate_b, "difference": rate_a - rate_b, "ci_low": float(ci_low),
            "ci_high": float(ci_high), "p_value": min(1.0, 2 * (far_side + 1) / (len(differences) + 1))}  # fmt: skip


def compare(
    records: Mapping[str, Sequence[Mapping]], metric: str = "cer", num_resamples: int = 1000, seed: int = 0
) -> dict:
    """Two named systems, per language and overall: {language | "overall": {"metric", name_a: rate, name_b: rate,
    "difference" (a - b), "ci_low", "ci_high", "p_value"}} (the "comparison" entries of results.json)."""
    if len(records) != 2:
        raise ValueError(f"compare takes exactly two systems, got {list(records)}")
    (name_a, records_a), (name_b, records_b) = records.items()
    paired_utterances(records_a, records_b)  # a clear error before any per-language split
    groups_b = by_language(records_b)
    groups = {**{language: (group, groups_b[language]) for language, group in by_language(records_a).items()},
              "overall": (records_a, records_b)}  # fmt: skip
    comparison = {}
    for group, (group_a, group_b) in groups.items():
        result = paired_bootstrap(group_a, group_b, metric, num_resamples, seed)
        comparison[group] = {
            "metric": metric, name_a: result["a"], name_b: result["b"],
            **{key: result[key] for key in ("difference", "ci_low", "ci_high", "p_value")},
        }  # fmt: skip
    return comparison


def hierarchical_bootstrap(
    runs_a: Sequence[Sequence[Mapping]],
    runs_b: Sequence[Sequence[Mapping]],
    metric: str = "cer",
    num_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Two systems trained with several seeds each: the difference a - b of their seed-mean corpus rates, with a
    95 % interval and a two-sided p-value over seeds and utterances together.

    runs_a / runs_b: one list of records per seed, all on the same utterances. Each resample draws the seeds of
    each system with replacement (seeds of a and b are independent runs: no pairing across systems), and one set of
    utterances with replacement shared by both systems (the utterances are the same: paired). The bootstrap over
    utterances alone sees only the test set's sampling; this one also sees run-to-run spread.
    -> {"metric", "a", "b", "difference", "ci_low", "ci_high", "p_value", "num_utterances", "seeds_a", "seeds_b"}.
    """
    reference = runs_a[0]
    utterance_ids = [record["utterance_id"] for record in reference]
    edits = {}  # side -> (S, N) per-seed edits, in the utterance order of `reference`
    for side, runs in (("a", runs_a), ("b", runs_b)):
        per_seed = [edit_counts([a for _, a in paired_utterances(reference, run)], metric) for run in runs]
        edits[side] = np.stack([seed_edits for seed_edits, _ in per_seed])
    lengths = edit_counts(reference, metric)[1]
    rng = np.random.default_rng(seed)
    weights = resample_counts(len(utterance_ids), num_resamples, seed)  # (R, N)
    resampled_lengths = np.maximum(weights @ lengths, 1)  # (R,)

    def resampled_rates(side_edits: np.ndarray) -> np.ndarray:  # (S, N) -> (R,) seed-mean rate per resample
        per_seed = weights @ side_edits.T / resampled_lengths[:, None]  # (R, S)
        draws = rng.integers(0, len(side_edits), size=per_seed.shape)
        return np.take_along_axis(per_seed, draws, 1).mean(1)

    differences = resampled_rates(edits["a"]) - resampled_rates(edits["b"])
    rate_a = float(np.mean([corpus_rate(e, lengths) for e in edits["a"]]))
    rate_b = float(np.mean([corpus_rate(e, lengths) for e in edits["b"]]))
    return bootstrap_summary(metric, rate_a, rate_b, differences) | {
        "num_utterances": len(utterance_ids), "seeds_a": len(runs_a), "seeds_b": len(runs_b)}
