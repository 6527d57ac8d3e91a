"""Loaders that bring every corpus into the common schema (see DESIGN.md, Data).

Common columns: `audio` (`Audio(decode=False)`: {"bytes", "path"}), `language` (ISO code), `transcript`
(may be ""), `image_id` (may be ""), `image` (`Image(decode=False)` or None), `speaker`, `duration` (seconds;
None where the header cannot be read: `validate` then reports the row), `utterance_id`. Nothing is decoded
implicitly: audio through `avalign.training.audio.load_audio`, images through `avalign.training.data.load_image`.

Corpora: the embedded corpus (`load_embedded`), Vaani (`load_vaani`), FLEURS (`load_fleurs`) and a user's
folder with a manifest (`load_folder`). Hub ids are fetched with `datasets.load_dataset` /
`huggingface_hub.snapshot_download`; a local folder of the same shape works offline.
"""

import csv
import json
import re
import tarfile
import unicodedata
from pathlib import Path

from datasets import (
    Audio,
    Dataset,
    DatasetDict,
    Features,
    Image,
    IterableDataset,
    Value,
    concatenate_datasets,
    load_dataset,
    load_from_disk,
)
from huggingface_hub import snapshot_download

from .audio import AudioError, audio_duration


COMMON_FEATURES = Features({
    "audio": Audio(decode=False),
    "language": Value("string"),
    "transcript": Value("string"),
    "image_id": Value("string"),
    "image": Image(decode=False),
    "speaker": Value("string"),
    "duration": Value("float64"),
    "utterance_id": Value("string"),
})  # fmt: skip
# Vaani and FLEURS also keep the transcript as published (annotated / cased, with punctuation)
RAW_TRANSCRIPT_FEATURES = Features({**COMMON_FEATURES, "raw_transcription": Value("string")})
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus")

# Vaani language names -> ISO 639-1 where one exists, else ISO 639-3. Names not listed are kept as they are
# (e.g. Khortha, Surgujia): pass `language_codes` to `load_vaani` to add or override entries.
VAANI_LANGUAGE_CODES = {
    "angika": "anp", "assamese": "as", "awadhi": "awa", "bengali": "bn", "bhili": "bhb", "bhojpuri": "bho",
    "bodo": "brx", "bundeli": "bns", "chhattisgarhi": "hne", "dogri": "doi", "english": "en", "garhwali": "gbm",
    "garo": "grt", "gondi": "gon", "gujarati": "gu", "halbi": "hlb", "haryanvi": "bgc", "hindi": "hi",
    "kannada": "kn", "kashmiri": "ks", "kokborok": "trp", "konkani": "kok", "kumaoni": "kfy", "kurukh": "kru",
    "magahi": "mag", "maithili": "mai", "malayalam": "ml", "manipuri": "mni", "marathi": "mr", "marwari": "mwr",
    "mizo": "lus", "nagamese": "nag", "nepali": "ne", "odia": "or", "punjabi": "pa", "rajasthani": "raj",
    "sadri": "sck", "sambalpuri": "spv", "santali": "sat", "sanskrit": "sa", "sindhi": "sd", "tamil": "ta",
    "telugu": "te", "tulu": "tcy", "urdu": "ur",
}  # fmt: skip


def normalize_text(text: str | None) -> str:
    """Unicode NFC, whitespace runs collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFC", text or "").split())


def as_common_schema(dataset):
    """Cast `audio` to `Audio(decode=False)` and `image` (when present) to `Image(decode=False)`."""
    dataset = dataset.cast_column("audio", Audio(decode=False))
    if "image" in (dataset.column_names or ()):
        dataset = dataset.cast_column("image", Image(decode=False))
    return dataset


def _header_duration(audio) -> float | None:
    """Seconds from the header, or None when it cannot be read (`validate` reports such rows)."""
    try:
        return audio_duration(audio)
    except AudioError:
        return None


def _index_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, str]:
    """{file name: path} for every file with one of `suffixes` below `folder`."""
    return {path.name: str(path) for path in sorted(folder.rglob("*")) if path.suffix.lower() in suffixes}


def _file_ref(path: str | None) -> dict | None:
    return {"bytes": None, "path": path} if path else None


def _from_rows(rows: list[dict]) -> Dataset:
    return as_common_schema(Dataset.from_list(rows))


def _map_to_schema(dataset, row_function, **fn_kwargs):
    """Keep `audio` ({"bytes", "path"}) and replace every other column by those `row_function` computes."""
    dataset = dataset.cast_column("audio", Audio(decode=False))
    other_columns = [column for column in dataset.column_names if column != "audio"]
    return dataset.map(
        row_function, fn_kwargs=fn_kwargs, remove_columns=other_columns, features=RAW_TRANSCRIPT_FEATURES
    )


# ---------------------------------------------------------------- embedded corpus


def load_embedded(path: str | Path) -> DatasetDict | Dataset:
    """The embedded corpus written by `training/synth.py` (`save_to_disk`), in the common schema."""
    corpus = load_from_disk(str(path))
    if isinstance(corpus, DatasetDict):
        return DatasetDict({split: as_common_schema(dataset) for split, dataset in corpus.items()})
    return as_common_schema(corpus)


# ---------------------------------------------------------------- Vaani


def vaani_language_code(name: str, language_codes: dict[str, str] | None = None) -> str:
    """ISO code for a Vaani language name; unknown names are returned unchanged (stripped)."""
    codes = {**VAANI_LANGUAGE_CODES, **{key.lower(): value for key, value in (language_codes or {}).items()}}
    name = (name or "").strip()
    return codes.get(name.lower(), name)


def clean_vaani_transcript(text: str | None) -> str:
    """Drop annotation tags (`<noise>`, `</pause>`), keep code-switched words without their `{}` marks."""
    return normalize_text(re.sub(r"<[^>]*>", " ", text or "").replace("{", "").replace("}", ""))


def _is_yes(value) -> bool:
    return value is True or str(value).strip().lower() in ("yes", "true", "1")


def _vaani_row(row: dict, image_paths: dict[str, str], language_codes: dict[str, str] | None) -> dict:
    has_transcript = _is_yes(row.get("isTranscriptionAvailable"))
    raw_transcript = (row.get("transcript") or "") if has_transcript else ""
    image_id = Path(row.get("referenceImage") or "").name
    audio_path = (row["audio"] or {}).get("path") or ""
    return {
        "language": vaani_language_code(row.get("language"), language_codes),
        "transcript": clean_vaani_transcript(raw_transcript),
        "raw_transcription": raw_transcript,
        "image_id": image_id,
        "image": _file_ref(image_paths.get(image_id)),
        "speaker": str(row.get("speakerID") or ""),
        "duration": _header_duration(row["audio"]),
        "utterance_id": Path(audio_path).stem,
    }


def _local_folder(path_or_repo: str, allow_patterns: list[str] | None = None) -> Path:
    """A local folder as it is, or a Hub dataset repo fetched with `snapshot_download`."""
    if Path(path_or_repo).is_dir():
        return Path(path_or_repo)
    return Path(snapshot_download(path_or_repo, repo_type="dataset", allow_patterns=allow_patterns))


def load_vaani(
    configs: str | list[str],
    path: str = "ARTPARK-IISc/Vaani",
    split: str = "train",
    images: str | None = None,
    streaming: bool = False,
    language_codes: dict[str, str] | None = None,
    **load_kwargs,
) -> Dataset | IterableDataset:
    """Vaani district (or language) `configs` in the common schema.

    `path` is the Hub repo or a local folder of the same shape (README configs + parquet). `images` is a local
    folder or a Hub dataset repo holding the prompt images, matched by file name to `referenceImage`; without
    it `image` is None and only `image_id` is set. Transcripts are kept only where `isTranscriptionAvailable`;
    `raw_transcription` keeps the annotated text. `load_kwargs` go to `load_dataset` (token, revision, ...).
    """
    image_paths = {}
    if images:
        image_paths = _index_files(_local_folder(images, ["*" + s for s in IMAGE_SUFFIXES]), IMAGE_SUFFIXES)
    parts = []
    for config in [configs] if isinstance(configs, str) else configs:
        part = load_dataset(path, config, split=split, streaming=streaming, **load_kwargs)
        parts.append(_map_to_schema(part, _vaani_row, image_paths=image_paths, language_codes=language_codes))
    return concatenate_datasets(parts)


# ---------------------------------------------------------------- FLEURS

FLEURS_SPLITS = {"train": "train", "dev": "dev", "validation": "dev", "test": "test"}
FLEURS_SAMPLING_RATE = 16000


def fleurs_language_code(config: str) -> str:
    """ISO code from a FLEURS config name: "hi_in" -> "hi", "cmn_hans_cn" -> "cmn"."""
    return config.split("_")[0]


def _fleurs_folder(path: str, language: str) -> Path:
    root = _local_folder(path, [f"*{language}/*"])
    for candidate in (root / language, root / "data" / language):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{root}: no FLEURS folder '{language}' (nor 'data/{language}')")


def _fleurs_audio_folder(folder: Path, split: str) -> Path:
    """`<lang>/audio/<split>/`, extracted first from `<lang>/audio/<split>.tar.gz` as the Hub ships it."""
    audio_folder, archive = folder / "audio" / split, folder / "audio" / f"{split}.tar.gz"
    if not audio_folder.is_dir() and archive.is_file():
        with tarfile.open(archive) as tar:
            tar.extractall(audio_folder, filter="data")
    return audio_folder


def _read_fleurs_tsv(tsv: Path, audio_paths: dict[str, str], language: str) -> list[dict]:
    rows = []
    with open(tsv, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            fields = line.rstrip("\n").split("\t")
            if line_number == 1 and fields[0] == "id":  # an optional header row
                continue
            if len(fields) < 6:
                raise ValueError(f"{tsv}:{line_number}: expected >= 6 tab-separated fields, found {len(fields)}")
            _, file_name, raw_transcription, transcription, _, num_samples = fields[:6]
            rows.append({
                "audio": _file_ref(audio_paths.get(file_name, str(tsv.parent / "audio" / tsv.stem / file_name))),
                "language": language,
                "transcript": normalize_text(transcription),
                "raw_transcription": raw_transcription,
                "image_id": "",
                "image": None,
                "speaker": "",
                "duration": int(num_samples) / FLEURS_SAMPLING_RATE,
                "utterance_id": Path(file_name).stem,
            })  # fmt: skip
    return rows


def _fleurs_parquet_row(row: dict, language: str) -> dict:
    name = (row["audio"] or {}).get("path") or row.get("path") or str(row.get("id", ""))
    return {
        "language": language,
        "transcript": normalize_text(row["transcription"]),
        "raw_transcription": row["raw_transcription"],
        "image_id": "",
        "image": None,
        "speaker": "",
        "duration": row["num_samples"] / FLEURS_SAMPLING_RATE,
        "utterance_id": Path(name).stem,
    }


def _load_fleurs_parquet(folder: Path, language: str) -> dict[str, Dataset]:
    """`<lang>/<split>/*.parquet` (refs/convert/parquet) or `<lang>/fleurs-<split>*.parquet`."""
    splits = {}
    for name, split in FLEURS_SPLITS.items():
        files = sorted(folder.glob(f"{name}/*.parquet")) + sorted(folder.glob(f"*-{name}*.parquet"))
        if files:
            part = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
            splits[split] = _map_to_schema(part, _fleurs_parquet_row, language=language)
    return splits


def load_fleurs(language: str, path: str = "google/fleurs") -> DatasetDict:
    """FLEURS `language` (a config such as "hi_in") as a DatasetDict with splits train/dev/test.

    `path` is a Hub repo or a local folder with `<lang>/{train,dev,test}.tsv` (id, file name, raw_transcription,
    transcription, words, num_samples, gender; no header) and audio in `<lang>/audio/<split>/` (or its
    `.tar.gz`), or the parquet variant. `transcript` is the normalised `transcription`; `raw_transcription`
    is kept. `language` in the rows is the ISO code ("hi").
    """
    folder = _fleurs_folder(path, language)
    code = fleurs_language_code(language)
    splits = _load_fleurs_parquet(folder, code)
    for split in ("train", "dev", "test"):
        tsv = folder / f"{split}.tsv"
        if split not in splits and tsv.is_file():
            audio_paths = _index_files(_fleurs_audio_folder(folder, split), AUDIO_SUFFIXES)
            splits[split] = _from_rows(_read_fleurs_tsv(tsv, audio_paths, code))
    if not splits:
        raise FileNotFoundError(f"{folder}: no FLEURS split found (neither <split>.tsv nor parquet files)")
    return DatasetDict(splits)


# ---------------------------------------------------------------- a user's folder

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")


def _read_manifest(manifest: Path) -> list[tuple[str, dict]]:
    """[(row name for messages, row)] from a CSV with a header row or a JSON-lines file."""
    with open(manifest, encoding="utf-8", newline="") as file:
        if manifest.suffix == ".csv":
            return [(f"{manifest}:{number}", row) for number, row in enumerate(csv.DictReader(file), start=2)]
        rows = []
        for number, line in enumerate(file, start=1):
            if line.strip():
                try:
                    rows.append((f"{manifest}:{number}", json.loads(line)))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{manifest}:{number}: not valid JSON ({error.msg})") from error
        return rows


def _folder_row(folder: Path, name: str, row: dict, language: str) -> dict:
    if not row.get("audio"):
        raise ValueError(f"{name}: the 'audio' column is empty (a path relative to {folder} is required)")
    audio = {"bytes": None, "path": str(folder / row["audio"])}
    image = str(folder / row["image"]) if row.get("image") else None
    duration = row.get("duration")
    return {
        **row,
        "audio": audio,
        "language": row.get("language") or language,
        "transcript": normalize_text(row.get("transcript")),
        "image_id": row.get("image_id") or row.get("image") or "",
        "image": _file_ref(image),
        "speaker": str(row.get("speaker") or ""),
        "duration": float(duration) if duration not in (None, "") else _header_duration(audio),
        "utterance_id": str(row.get("utterance_id") or Path(row["audio"]).stem),
    }


def load_folder(folder: str | Path, language: str = "") -> Dataset:
    """A folder of audio files described by `manifest.csv` or `manifest.jsonl`.

    Required column: `audio` (path relative to the folder). Optional: language (else `language`), transcript,
    image (relative path), image_id (else the image path), speaker, duration (else read from the header),
    utterance_id (else the audio file stem); other columns are kept.
    """
    folder = Path(folder)
    manifests = [folder / name for name in MANIFEST_NAMES if (folder / name).is_file()]
    if len(manifests) != 1:
        raise FileNotFoundError(f"{folder}: expected exactly one of {MANIFEST_NAMES}, found {len(manifests)}")
    rows = [_folder_row(folder, name, row, language) for name, row in _read_manifest(manifests[0])]
    if not rows:
        raise ValueError(f"{manifests[0]}: the manifest has no rows")
    return _from_rows(rows)
