"""Loaders that bring every corpus into the common schema (`avalign.training.schema`; DESIGN.md, Data).

A `duration` the audio header does not give is None: `validate` then reports the row. Nothing is decoded
implicitly: audio through `avalign.training.data.audio.load_audio`, images through
`avalign.training.data.batching.load_image`.

Corpora: the embedded corpus (`load_embedded`), Vaani (`load_vaani`), FLEURS (`load_fleurs`) and a user's
folder with a manifest (`load_folder`). Hub ids are fetched with `datasets.load_dataset` /
`huggingface_hub.snapshot_download`; a local folder of the same shape works offline.
"""

import csv
import hashlib
import json
import re
import tarfile
from pathlib import Path
from urllib.parse import quote

from datasets import (
    Audio,
    Dataset,
    DatasetDict,
    Image,
    IterableDataset,
    concatenate_datasets,
    load_dataset,
    load_from_disk,
)
from datasets.data_files import sanitize_patterns
from huggingface_hub import DatasetCard, snapshot_download

from ..schema import AUDIO_SUFFIXES, IMAGE_SUFFIXES, RAW_TRANSCRIPT_FEATURES, normalize_text
from .audio import AudioError, audio_duration

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


def _map_to_schema(dataset, row_function, with_indices: bool = False, **fn_kwargs):
    """Keep `audio` ({"bytes", "path"}) and replace every other column by those `row_function` computes."""
    dataset = dataset.cast_column("audio", Audio(decode=False))
    other_columns = [column for column in dataset.column_names if column != "audio"]
    return dataset.map(
        row_function, with_indices=with_indices, fn_kwargs=fn_kwargs, remove_columns=other_columns,
        features=RAW_TRANSCRIPT_FEATURES,
    )


# ---------------------------------------------------------------- embedded corpus


def load_embedded(path: str | Path) -> DatasetDict | Dataset:
    """The embedded corpus written by `training/corpus/synth.py` (`save_to_disk`), in the common schema."""
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


VAANI_CONFIG = re.compile(r"audio/[^/]+/[^/]+")
OLD_VAANI_CONFIG = re.compile(r"([^/_]+)_([^/_]+)")
# The columns of every config on the dataset card (dataset_info); there is no speaker id
VAANI_COLUMNS = (
    "audio", "language", "languagesKnown", "gender", "state", "district", "pincode", "stay(years)",
    "isTranscriptionAvailable", "transcript", "referenceImage",
)  # fmt: skip
# The speaker's registration details, repeated on each of their rows
VAANI_SPEAKER_FIELDS = ("state", "district", "pincode", "gender", "languagesKnown", "stay(years)")


def check_vaani_config(config: str) -> str:
    """`config` when it has the published form `audio/<State>/<District>`; else a ValueError naming that form."""
    if VAANI_CONFIG.fullmatch(config):
        return config
    old_style = OLD_VAANI_CONFIG.fullmatch(config)
    if old_style:
        state, district = old_style.groups()
        raise ValueError(
            f"Vaani config {config!r} is in the old <State>_<District> style; the published configs are named "
            f"audio/<State>/<District>: use 'audio/{state}/{district}'"
        )
    raise ValueError(f"Vaani config {config!r}: expected audio/<State>/<District>, e.g. 'audio/Karnataka/Bangalore'")


def vaani_pseudo_speaker(row: dict) -> str:
    """A stable stand-in for the speaker id, which the published Vaani rows lack: a hash of `VAANI_SPEAKER_FIELDS`.

    An approximation. The details (state, district, pincode, gender, languages known, stay in years) belong to the
    speaker, so one speaker's rows share one pseudo-speaker unless their details were recorded differently; people
    who share all six are merged. Coarser than true speakers, which keeps speaker-disjoint splits disjoint (what
    `speaker` is for); counts of speakers come out low.
    """
    key = "\x1f".join(str(row.get(field) or "").strip() for field in VAANI_SPEAKER_FIELDS)
    return "vaani-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def _transcription_available(value, row_name: str) -> bool:
    answer = str(value).strip().lower()
    if answer not in ("yes", "no"):
        raise ValueError(f"{row_name}: isTranscriptionAvailable is {value!r}, expected 'Yes' or 'No'")
    return answer == "yes"


def _vaani_row(
    row: dict, index: int, config: str, image_paths: dict[str, str], language_codes: dict[str, str] | None
) -> dict:
    available = _transcription_available(row["isTranscriptionAvailable"], f"{config} row {index}")
    raw_transcript = (row["transcript"] or "") if available else ""
    image_id = Path(row["referenceImage"] or "").name
    audio_path = (row["audio"] or {}).get("path")
    return {
        "language": vaani_language_code(row["language"], language_codes),
        "transcript": clean_vaani_transcript(raw_transcript),
        "raw_transcription": raw_transcript,
        "image_id": image_id,
        "image": _file_ref(image_paths.get(image_id)),
        "speaker": vaani_pseudo_speaker(row),
        "duration": _header_duration(row["audio"]),
        "utterance_id": Path(audio_path).stem if audio_path else f"{config}:{index}",  # validate's reports name it
    }


def _local_folder(path_or_repo: str, allow_patterns: list[str] | None = None, **hub_kwargs) -> Path:
    """A local folder as it is, or a Hub dataset repo fetched with `snapshot_download` (`hub_kwargs`: token, ...)."""
    if Path(path_or_repo).is_dir():
        return Path(path_or_repo)
    return Path(snapshot_download(path_or_repo, repo_type="dataset", allow_patterns=allow_patterns, **hub_kwargs))


def _card_configs(path: str, revision: str | None, token) -> dict[str, dict]:
    """{config name: entry} from the `configs` of the dataset card (README.md) of a Hub repo or a local folder."""
    card = _local_folder(path, ["README.md"], revision=revision, token=token) / "README.md"
    return {entry["config_name"]: entry for entry in DatasetCard.load(card).data.to_dict().get("configs", [])}


def _vaani_data_files(path: str, card_configs: dict[str, dict], config: str, split: str, revision: str | None):
    """The files of `config`'s `split` as the card lists them: local paths, or `hf://` paths for a Hub repo."""
    if config not in card_configs:
        raise ValueError(f"{path}: the dataset card has no config {config!r} (it has e.g. {sorted(card_configs)[:3]})")
    splits = sanitize_patterns(card_configs[config]["data_files"])
    if split not in splits:
        raise ValueError(f"{path}: config {config!r} has no split {split!r} (it has {sorted(splits)})")
    root = path if Path(path).is_dir() else f"hf://datasets/{path}@{quote(revision or 'main', safe='')}"
    return [f"{root}/{pattern}" for pattern in splits[split]]


def _check_vaani_columns(dataset, config: str) -> None:
    missing = [column for column in VAANI_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(f"Vaani config {config!r}: the columns {missing} are missing (found {dataset.column_names})")


def load_vaani(
    configs: str | list[str],
    path: str = "ARTPARK-IISc/Vaani",
    split: str = "train",
    images: str | None = None,
    streaming: bool = False,
    language_codes: dict[str, str] | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    **load_kwargs,
) -> Dataset | IterableDataset:
    """Vaani district `configs` (`audio/<State>/<District>`, as on the dataset card) in the common schema.

    A config in the old `<State>_<District>` style raises a ValueError naming the published one, before any
    download. `path` is the Hub repo (gated: accept its terms, pass `token`) or a local folder of the same shape
    (README `configs` + parquet). datasets refuses a '/' in a config name, so each config's files are looked up on
    the card and read with the parquet builder (`load_kwargs` go to that `load_dataset`).

    `images` is a local folder or a Hub dataset repo holding the prompt images, matched by file name to
    `referenceImage`; without it `image` is None and only `image_id` is set. Transcripts are kept only where
    `isTranscriptionAvailable` is "Yes" (any value but Yes/No raises, naming the config and row); `raw_transcription`
    keeps the annotated text. `speaker` is `vaani_pseudo_speaker` (the card has no speaker id). `duration` is read
    from the audio header; a row whose audio has no path gets the `utterance_id` "<config>:<row>".
    """
    configs = [check_vaani_config(config) for config in ([configs] if isinstance(configs, str) else configs)]
    card_configs = _card_configs(path, revision, token)
    image_paths = {}
    if images:
        image_folder = _local_folder(images, ["*" + suffix for suffix in IMAGE_SUFFIXES], token=token)
        image_paths = _index_files(image_folder, IMAGE_SUFFIXES)
    parts = []
    for config in configs:
        files = {split: _vaani_data_files(path, card_configs, config, split, revision)}
        part = load_dataset("parquet", data_files=files, split=split, streaming=streaming, token=token, **load_kwargs)
        _check_vaani_columns(part, config)
        parts.append(_map_to_schema(
            part, _vaani_row, with_indices=True, config=config, image_paths=image_paths, language_codes=language_codes
        ))  # fmt: skip
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
