"""ASR scoring: text normalisation, corpus-level WER / CER per language, paired bootstrap between two systems.

Normalisation, applied alike to the reference and the hypothesis before scoring (`normalize_transcript`):

    1. lowercase;
    2. every punctuation character (Unicode category P*: ".,?!'\"-" and the Devanagari danda "।" and double
       danda "॥" among them) becomes a space, so "word,word" or "वाक्य।दूसरा" still splits into two words
       (and "don't" into "don t", on both sides alike);
    3. Unicode NFC (precomposed and decomposed spellings score the same), whitespace runs collapsed to one
       space, leading and trailing spaces dropped (`loaders.normalize_text`).

Combining marks (matras, viramas, nuktas: category M*) and the joiners ZWJ / ZWNJ (Cf) are kept: they are
spelling. Symbols (S*, "$", "+") and digits are kept as written.

WER counts words (jiwer's word alignment), CER counts characters with the spaces between words included (jiwer's
`cer`), so a wrong word boundary costs one character. Both are corpus-level: total edits over total reference
length, the same as jiwer on the lists of references and hypotheses. An empty reference adds its hypothesis length
as insertions and nothing to the reference length.

`paired_bootstrap` resamples utterances with replacement (the same draw for both systems) and recomputes the
corpus-level difference a - b each time. The interval is the 2.5 / 97.5 percentile of the resampled differences;
the two-sided p-value is twice the fraction of resampled differences on the far side of 0 (counting ties),
with the +1 correction of Davison & Hinkley, (k + 1) / (R + 1), and clipped to 1: it is never exactly 0 and is 1
for identical systems.
"""

import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import jiwer
import numpy as np

from .loaders import normalize_text

METRICS = ("wer", "cer")


def normalize_transcript(text: str) -> str:
    """Lowercase, punctuation -> space, NFC, whitespace collapsed (see the module docstring)."""
    text = "".join(" " if unicodedata.category(char).startswith("P") else char for char in (text or "").lower())
    return normalize_text(text)


def utterance_edits(reference: str, hypothesis: str, metric: str) -> tuple[int, int]:
    """(edits, reference length) in words (`"wer"`) or characters with spaces (`"cer"`), on normalised texts."""
    reference, hypothesis = normalize_transcript(reference), normalize_transcript(hypothesis)
    if not reference:  # jiwer < 4 refuses empty references: all of the hypothesis is insertions
        return len(hypothesis.split() if metric == "wer" else hypothesis), 0
    alignment = (jiwer.process_words if metric == "wer" else jiwer.process_characters)(reference, hypothesis)
    edits = alignment.substitutions + alignment.deletions + alignment.insertions
    return edits, alignment.substitutions + alignment.deletions + alignment.hits


def edit_counts(records: Sequence[Mapping], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance (edits (N,), reference lengths (N,)) of records with "reference" and "hypothesis"."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    counts = [utterance_edits(record["reference"], record["hypothesis"], metric) for record in records]
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 2)
    return counts[:, 0], counts[:, 1]


def error_rate(edits: np.ndarray, lengths: np.ndarray) -> float:
    """Corpus-level rate: total edits / total reference length."""
    total = lengths.sum()
    if total == 0:
        raise ValueError("every reference is empty: the error rate is undefined")
    return float(edits.sum() / total)


def by_language(records: Iterable[Mapping]) -> dict[str, list[Mapping]]:
    """{language: records}, languages sorted."""
    groups = {}
    for record in records:
        groups.setdefault(record["language"], []).append(record)
    return dict(sorted(groups.items()))


def score_group(records: Sequence[Mapping]) -> dict:
    """Error rates, and how many distinct texts the system wrote next to how many distinct references there are: a
    system that writes one fixed string for every clip has 1 distinct hypothesis, whatever its error rate."""
    rates = {metric: error_rate(*edit_counts(records, metric)) for metric in METRICS}
    distinct = lambda side: len({normalize_transcript(record[side]) for record in records})  # noqa: E731
    return {**rates, "num_utterances": len(records), "distinct_hypotheses": distinct("hypothesis"),
            "distinct_references": distinct("reference")}  # fmt: skip


def score(records: Sequence[Mapping]) -> dict:
    """{"overall": {"wer", "cer", "num_utterances"}, "per_language": {language: {...}}}, corpus-level rates."""
    if not records:
        raise ValueError("no records to score")
    per_language = {language: score_group(group) for language, group in by_language(records).items()}
    return {"overall": score_group(records), "per_language": per_language}


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
    rate_a, rate_b = error_rate(edits_a, lengths), error_rate(edits_b, lengths)

    weights = resample_counts(len(pairs), num_resamples, seed)  # (R, N)
    resampled_lengths = np.maximum(weights @ lengths, 1)  # (R,); 0 only if every draw has an empty reference
    differences = weights @ (edits_a - edits_b) / resampled_lengths  # (R,)
    far_side = int(min((differences <= 0).sum(), (differences >= 0).sum()))
    ci_low, ci_high = np.percentile(differences, [2.5, 97.5])
    return {
        "metric": metric, "a": rate_a, "b": rate_b, "difference": rate_a - rate_b,
        "ci_low": float(ci_low), "ci_high": float(ci_high),
        "p_value": min(1.0, 2 * (far_side + 1) / (num_resamples + 1)), "num_utterances": len(pairs),
    }  # fmt: skip


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
