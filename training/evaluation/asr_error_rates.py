"""avalign's ASR scoring as an `evaluate` metric: WER and CER after one normalisation, overall and per language.

    import evaluate
    from avalign.training.evaluation import asr_error_rates
    metric = evaluate.load(asr_error_rates.__file__)          # offline: a local module, loaded by path
    metric.compute(predictions=["यह घर है"], references=["यह घर है।"], languages=["hi"])
    # {"wer": 0.0, "cer": 0.0, "num_utterances": 1, "per_language": {"hi": {"wer": 0.0, "cer": 0.0, ...}}}

Self-contained (only `evaluate`, `datasets` and `jiwer`), so that the same file can be pushed to the Hub as a
metric. `avalign.training.evaluation.metrics` builds its per-system scores and paired bootstrap on the functions here.

Normalisation, applied alike to the reference and the hypothesis (`normalize_transcript`):

    1. lowercase;
    2. every punctuation character (Unicode category P*: ".,?!'\"-" and the Devanagari danda "।" and double
       danda "॥" among them) becomes a space, so "word,word" or "वाक्य।दूसरा" still splits into two words
       (and "don't" into "don t", on both sides alike);
    3. Unicode NFC (precomposed and decomposed spellings score the same), whitespace runs collapsed to one
       space, leading and trailing spaces dropped.

Combining marks (matras, viramas, nuktas: category M*) and the joiners ZWJ / ZWNJ (Cf) are kept: they are
spelling. Symbols (S*, "$", "+") and digits are kept as written.

WER counts words (jiwer's word alignment), CER counts characters with the spaces between words included (jiwer's
`cer`), so a wrong word boundary costs one character. Both are corpus-level: total edits over total reference
length, the same as jiwer on the lists of references and hypotheses. An empty reference adds its hypothesis length
as insertions and nothing to the reference length.
"""

import unicodedata
from collections.abc import Sequence

import datasets
import evaluate
import jiwer

METRICS = ("wer", "cer")


def normalize_transcript(text: str | None) -> str:
    """Lowercase, punctuation -> space, NFC, whitespace collapsed (see the module docstring)."""
    text = "".join(" " if unicodedata.category(char).startswith("P") else char for char in (text or "").lower())
    return " ".join(unicodedata.normalize("NFC", text).split())


def utterance_edits(reference: str, hypothesis: str, metric: str) -> tuple[int, int]:
    """(edits, reference length) in words (`"wer"`) or characters with spaces (`"cer"`), on normalised texts."""
    reference, hypothesis = normalize_transcript(reference), normalize_transcript(hypothesis)
    if not reference:  # jiwer < 4 refuses empty references: all of the hypothesis is insertions
        return len(hypothesis.split() if metric == "wer" else hypothesis), 0
    alignment = (jiwer.process_words if metric == "wer" else jiwer.process_characters)(reference, hypothesis)
    edits = alignment.substitutions + alignment.deletions + alignment.insertions
    return edits, alignment.substitutions + alignment.deletions + alignment.hits


def corpus_rate(edits: Sequence[int], lengths: Sequence[int]) -> float:
    """Corpus-level rate: total edits / total reference length."""
    total = sum(lengths)
    if total == 0:
        raise ValueError("every reference is empty: the error rate is undefined")
    return float(sum(edits) / total)


def error_rates(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """{"wer", "cer", "num_utterances"}: corpus-level rates over the pairs."""
    if not references:
        raise ValueError("no utterances to score")
    rates = {}
    for metric in METRICS:
        rates[metric] = corpus_rate(*zip(*(utterance_edits(r, p, metric) for r, p in zip(references, predictions))))
    return {**rates, "num_utterances": len(references)}


class AsrErrorRates(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="WER and CER after avalign's normalisation (lowercase, punctuation to space, NFC), "
            "corpus-level, overall and per language.",
            citation="",
            inputs_description="predictions, references: lists of str; languages (optional): list of str, one per pair",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/jitsi/jiwer"],
        )

    def _compute(self, predictions, references, languages=None):
        if len(predictions) != len(references) or (languages is not None and len(languages) != len(references)):
            raise ValueError("predictions, references and languages must have one entry per utterance")
        result = error_rates(predictions, references)
        if languages is not None:
            pairs = {}
            for prediction, reference, language in zip(predictions, references, languages):
                pairs.setdefault(language, []).append((prediction, reference))
            result["per_language"] = {language: error_rates(*zip(*group)) for language, group in sorted(pairs.items())}
        return result
