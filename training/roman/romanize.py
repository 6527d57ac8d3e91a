"""Romanized ASR targets: uroman (offline) with a persistent cache.

    romanize(["तस्वीर में दो लाल गोले हैं"], ["hi"])  ->  ["tasviir mem do laal gole haim"]

uroman takes ISO 639-3 codes; the corpus uses ISO 639-1 (`UROMAN_CODES` maps them). A romanization is uroman's
output lower-cased with whitespace runs collapsed; an empty (or all-space) text romanizes to "" without a uroman
call, so the unlabeled splits' empty transcripts pass through. An unknown language code raises `ValueError`.

uroman takes 10-20 s to load its tables (once per process) and ~7 ms per new sentence, so every result is kept
in a `RomanizationCache` (a JSON file {language: {text: romanization}}) and `romanize_dataset` only asks uroman
about (language, text) pairs it has never seen.
"""

import functools
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import datasets
import uroman

UROMAN_CODES = {
    "hi": "hin", "bn": "ben", "ta": "tam", "te": "tel", "mr": "mar",
    "kn": "kan", "gu": "guj", "ml": "mal", "pa": "pan", "en": "eng",
}  # fmt: skip
ROMAN_SUFFIX = "_roman"  # transcript -> transcript_roman
ROMANIZED_COLUMNS = ("transcript", "reference_transcript")
UROMAN_WORD_CACHE_SIZE = 65536  # uroman's own in-memory cache of words (space-separated pieces)


def uroman_code(language: str) -> str:
    """ISO 639-3 code uroman expects for one of our ISO 639-1 codes; `ValueError` for an unknown one."""
    if language not in UROMAN_CODES:
        raise ValueError(f"no uroman language code for {language!r}; known languages: {sorted(UROMAN_CODES)}")
    return UROMAN_CODES[language]


@functools.cache
def load_uroman() -> uroman.Uroman:
    """The process-wide uroman instance (loading its tables takes 10-20 s)."""
    return uroman.Uroman(cache_size=UROMAN_WORD_CACHE_SIZE)


def normalize_roman(text: str) -> str:
    return " ".join(text.lower().split())


def romanize_text(text: str, language: str) -> str:
    """One uncached uroman call, normalised (lower case, single spaces)."""
    return normalize_roman(load_uroman().romanize_string(text, lcode=uroman_code(language)))


class RomanizationCache:
    """{(language, text): romanization}, kept in a JSON file when `path` is given (in memory otherwise).

    `hits` / `misses` count the lookups served from the cache and the texts sent to uroman.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        exists = self.path is not None and self.path.exists()
        self.entries: dict[str, dict[str, str]] = json.loads(self.path.read_text("utf-8")) if exists else {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return sum(len(texts) for texts in self.entries.values())

    def romanize(self, texts: Sequence[str], languages: Sequence[str]) -> list[str]:
        """Romanizations of `texts` (uroman only for pairs not cached yet); saves the file when anything was added."""
        if len(texts) != len(languages):
            raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
        for row, language in enumerate(languages):
            try:
                uroman_code(language)
            except ValueError as error:
                raise ValueError(f"text {row} ({texts[row]!r}): {error}") from None
        missing = {(language, text) for text, language in zip(texts, languages) if not self.contains(language, text)}
        for language, text in sorted(missing):
            self.entries.setdefault(language, {})[text] = romanize_text(text, language)
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if missing:
            self.save()
        return [self.lookup(language, text) for text, language in zip(texts, languages)]

    def contains(self, language: str, text: str) -> bool:
        """Empty texts count as cached: they romanize to "" with no uroman call."""
        return not text.strip() or text in self.entries.get(language, {})

    def lookup(self, language: str, text: str) -> str:
        return self.entries[language][text] if text.strip() else ""

    def save(self) -> None:
        """Atomic write (a temporary file of its own, renamed), so an interrupted run never leaves a truncated cache
        and writers in parallel (`--jobs` workers) never rename one another's file."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.path.parent, prefix=f"{self.path.name}.",
                                         suffix=".tmp", delete=False) as temporary:  # fmt: skip
            temporary.write(json.dumps(self.entries, ensure_ascii=False, sort_keys=True))
        os.replace(temporary.name, self.path)


def romanize(texts: Sequence[str], languages: Sequence[str], cache: RomanizationCache | None = None) -> list[str]:
    """Roman-script versions of `texts` (one language code per text), through `cache` when given."""
    return (cache if cache is not None else RomanizationCache()).romanize(texts, languages)


def romanize_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict, cache_path: str | os.PathLike | None, batch_size: int = 1000
) -> datasets.Dataset | datasets.DatasetDict:
    """`dataset` with `transcript_roman` (and `reference_transcript_roman` where `reference_transcript` exists),
    through `datasets.map`; `cache_path` is the JSON cache shared by every split and run (None: in memory)."""
    cache = RomanizationCache(cache_path)
    splits = dataset.values() if isinstance(dataset, datasets.DatasetDict) else [dataset]
    columns = [column for column in ROMANIZED_COLUMNS if all(column in split.column_names for split in splits)]
    if "transcript" not in columns or not all("language" in split.column_names for split in splits):
        raise ValueError(f"romanize_dataset needs the columns 'language' and 'transcript' in every split: {dataset}")

    def add_romanized(languages: list[str], *texts: list[str]) -> dict:
        return {column + ROMAN_SUFFIX: cache.romanize(values, languages) for column, values in zip(columns, texts)}

    # input_columns: only the text columns are read, the audio and image columns are never decoded
    return dataset.map(
        add_romanized, input_columns=["language", *columns], batched=True, batch_size=batch_size, desc="romanize"
    )


def with_targets(dataset, targets: str, cache_path: str | None):
    """`transcript` in the target script: unchanged (native), or romanized with uroman through the cache (roman)."""
    if targets == "native":
        return dataset
    if targets != "roman":
        raise ValueError(f"--targets must be 'native' or 'roman', got {targets!r}")
    romanized = romanize_dataset(dataset, cache_path)
    return romanized.rename_column("transcript", "transcript_native").rename_column("transcript_roman", "transcript")
