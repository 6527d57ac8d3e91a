"""Loaders on local fixtures shaped like the real corpora, validate's counted skips, the sampler, the collator."""

import csv
import io
import json
import os
import tarfile
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from datasets import Audio, Dataset, DatasetDict, Image
from PIL import Image as PILImage
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from torch.utils.data import DataLoader
from transformers import ParakeetFeatureExtractor, PreTrainedTokenizerFast

from avalign.training.data.audio import DataError
from avalign.training.data.batching import (
    SKIP_REASONS,
    AudioAugmentation,
    DurationBucketSampler,
    SpeechCollator,
    load_image,
    padding_fraction,
    validate,
)
from avalign.training.data import loaders
from avalign.training.data.loaders import (
    load_embedded,
    load_fleurs,
    load_folder,
    load_vaani,
    vaani_pseudo_speaker,
)


SR = 16000


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """load_dataset caches local folders by folder name and config: keep each test's cache to itself."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))


def wav_bytes(seconds: float, sample_rate: int = SR, subtype: str = "PCM_16", value: float | None = None) -> bytes:
    samples = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * sample_rate)) / sample_rate)
    if value is not None:
        samples[len(samples) // 2] = value
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), sample_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def png_bytes(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write(path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(" abcdefghijklmnopqrstuvwxyz")}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>")


def assert_common_schema(dataset):
    assert dataset.features["audio"] == Audio(decode=False)
    assert dataset.features["image"] == Image(decode=False)
    for column in ("language", "transcript", "image_id", "speaker", "duration", "utterance_id"):
        assert column in dataset.features


# ---------------------------------------------------------------- loaders


def test_load_embedded_casts_audio_and_image_to_undecoded(tmp_path):
    rows = [
        {"audio": {"bytes": wav_bytes(0.5 + i / 4), "path": f"u{i}.wav"}, "language": "hi", "transcript": "ek",
         "image_id": f"img{i}", "image": {"bytes": png_bytes(), "path": None}, "speaker": "s1",
         "duration": 0.5 + i / 4, "utterance_id": f"u{i}"}
        for i in range(3)
    ]  # fmt: skip
    split = Dataset.from_list(rows).cast_column("audio", Audio()).cast_column("image", Image())
    DatasetDict({"train": split, "test": split.select([0])}).save_to_disk(tmp_path / "corpus")
    corpus = load_embedded(tmp_path / "corpus")
    assert set(corpus) == {"train", "test"} and corpus["train"].num_rows == 3
    assert_common_schema(corpus["train"])
    assert corpus["train"][1]["audio"]["bytes"] == rows[1]["audio"]["bytes"]
    assert load_image(corpus["train"][0]["image"]).size == (8, 8)


VAANI_CONFIG = "audio/Karnataka/Bangalore"
VAANI_IMAGE = "IISc_VaaniProject_Bangalore-SPECIFIC_0001.jpg"  # `referenceImage` is "Images/<file name>"
# As on the ARTPARK-IISc/Vaani card (dataset_info): these columns, in this order, no speaker id
VAANI_CARD_COLUMNS = [
    "audio", "language", "languagesKnown", "gender", "state", "district", "pincode", "stay(years)",
    "isTranscriptionAvailable", "transcript", "referenceImage",
]  # fmt: skip


def vaani_rows() -> list[dict]:
    """Rows with the card's columns: 0 and 1 share one speaker's details, 2 and 3 another's; 3 has no audio."""
    speakers = [
        ("Female", "['Kannada', 'English']", "Bangalore(20)", 560012),
        ("Male", "['Khortha']", "Bangalore(3)", 560001),
    ]
    rows = [
        {"audio": {"bytes": wav_bytes(1.0 + i / 2, sample_rate=44100), "path": f"Vaani_KA_Bangalore_{i}.wav"},
         "language": language, "languagesKnown": known, "gender": gender, "state": "Karnataka",
         "district": "Bangalore", "pincode": pincode, "stay(years)": stay, "isTranscriptionAvailable": available,
         "transcript": transcript, "referenceImage": f"Images/{reference_image}"}
        for i, (language, available, transcript, reference_image, (gender, known, stay, pincode)) in enumerate([
            ("Kannada", "Yes", "ನಮಸ್ಕಾರ  <noise> {hello}", VAANI_IMAGE, speakers[0]),
            ("Kannada", "No", None, VAANI_IMAGE, speakers[0]),
            ("Khortha", "Yes", "text", "IISc_VaaniProject_GENERIC_0002.jpg", speakers[1]),  # not in the images folder
            ("Kannada", "No", None, VAANI_IMAGE, speakers[1]),
        ])
    ]  # fmt: skip
    rows[3]["audio"] = None
    return rows


def make_vaani(root, rows: list[dict]):
    """A local copy shaped like ARTPARK-IISc/Vaani: the card's configs, per-district parquet, an images folder."""
    root.mkdir(parents=True, exist_ok=True)
    card = {
        "dataset_info": [{"config_name": VAANI_CONFIG, "features": [{"name": name} for name in VAANI_CARD_COLUMNS]}],
        "configs": [{"config_name": VAANI_CONFIG,
                     "data_files": [{"split": "train", "path": f"{VAANI_CONFIG}/train-*.parquet"}]}],
    }  # fmt: skip
    (root / "README.md").write_text(f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n")
    parquet = root / VAANI_CONFIG / "train-00000-of-00001.parquet"
    parquet.parent.mkdir(parents=True)
    table = Dataset.from_list(rows).cast_column("audio", Audio())
    assert table.column_names == VAANI_CARD_COLUMNS
    table.to_parquet(str(parquet))  # keeps the Audio() metadata
    (root / "images" / "sub").mkdir(parents=True)
    PILImage.new("RGB", (8, 8)).save(root / "images" / "sub" / VAANI_IMAGE)


def test_load_vaani_maps_the_published_columns_to_schema_and_streams_the_same(tmp_path):
    make_vaani(tmp_path / "vaani", vaani_rows())
    kwargs = {"path": str(tmp_path / "vaani"), "images": str(tmp_path / "vaani" / "images")}
    vaani = load_vaani(VAANI_CONFIG, **kwargs)
    assert_common_schema(vaani)
    assert vaani["language"] == ["kn", "kn", "Khortha", "kn"]  # unknown names are kept
    assert vaani["transcript"] == ["ನಮಸ್ಕಾರ hello", "", "text", ""]
    assert vaani[0]["raw_transcription"] == "ನಮಸ್ಕಾರ  <noise> {hello}"
    assert vaani["image_id"][1:3] == [VAANI_IMAGE, "IISc_VaaniProject_GENERIC_0002.jpg"]
    assert vaani[0]["image"]["path"].endswith(f"images/sub/{VAANI_IMAGE}") and vaani[2]["image"] is None
    assert vaani["duration"] == pytest.approx([1.0, 1.5, 2.0, None])
    assert vaani["utterance_id"][::3] == ["Vaani_KA_Bangalore_0", "audio/Karnataka/Bangalore:3"]
    streamed = list(load_vaani(VAANI_CONFIG, streaming=True, **kwargs))
    assert [{k: row[k] for k in vaani.column_names} for row in streamed] == vaani.to_list()
    assert load_vaani(VAANI_CONFIG, language_codes={"Khortha": "kht"}, **kwargs)["language"][2] == "kht"

    kept, report = validate(vaani, require_image=True)
    assert report.counts == {"missing_image": 1, "unreadable": 1}
    assert report.examples["unreadable"] == ["audio/Karnataka/Bangalore:3"]
    assert kept["utterance_id"] == ["Vaani_KA_Bangalore_0", "Vaani_KA_Bangalore_1"]


def test_vaani_speaker_is_a_stable_pseudo_speaker_from_the_registration_details(tmp_path):
    make_vaani(tmp_path / "vaani", vaani_rows())
    speakers = load_vaani(VAANI_CONFIG, path=str(tmp_path / "vaani"))["speaker"]
    assert speakers[0] == speakers[1] != speakers[2] == speakers[3]  # same details, same pseudo-speaker
    details = {"state": "Karnataka", "district": "Bangalore", "pincode": 560012, "gender": "Female",
               "languagesKnown": "['Kannada', 'English']", "stay(years)": "Bangalore(20)"}  # fmt: skip
    assert vaani_pseudo_speaker(details) == speakers[0] == "vaani-e58e6a31c531"  # the same in every run and process
    assert vaani_pseudo_speaker({**details, "pincode": 560001}) != speakers[0]
    assert "approximation" in vaani_pseudo_speaker.__doc__


def test_load_vaani_names_the_published_config_for_an_old_style_name_before_any_download(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded for a bad config name")

    monkeypatch.setattr(loaders, "snapshot_download", no_download)
    monkeypatch.setattr(loaders, "load_dataset", no_download)
    with pytest.raises(ValueError, match=r"old <State>_<District> style.*use 'audio/Karnataka/Bangalore'"):
        load_vaani(["audio/AndhraPradesh/Anantpur", "Karnataka_Bangalore"])
    with pytest.raises(ValueError, match=r"expected audio/<State>/<District>"):
        load_vaani("Kannada")


def test_load_vaani_bad_rows_and_unknown_configs_name_the_config(tmp_path):
    rows = vaani_rows()
    rows[1]["isTranscriptionAvailable"] = "Maybe"
    make_vaani(tmp_path / "vaani", rows)
    with pytest.raises(ValueError, match=r"audio/Karnataka/Bangalore row 1: isTranscriptionAvailable is 'Maybe'"):
        load_vaani(VAANI_CONFIG, path=str(tmp_path / "vaani"))
    with pytest.raises(ValueError, match=r"no config 'audio/Karnataka/Mysore'.*audio/Karnataka/Bangalore"):
        load_vaani("audio/Karnataka/Mysore", path=str(tmp_path / "vaani"))


def fleurs_tsv_line(name: str, raw: str, normalised: str, seconds: float) -> str:
    return "\t".join(["1", name, raw, normalised, "|".join(normalised.split()), str(int(seconds * SR)), "FEMALE"])


def test_load_fleurs_tsv_with_folder_and_archive_audio(tmp_path):
    language = tmp_path / "fleurs" / "hi_in"
    write(language / "audio" / "train" / "1.wav", wav_bytes(1.0))
    write(language / "audio" / "train" / "2.wav", wav_bytes(0.5))
    (language / "train.tsv").write_text(
        fleurs_tsv_line("1.wav", "Namaste, Duniya!", "namaste   duniya", 1.0) + "\n"
        + fleurs_tsv_line("2.wav", "Ek.", "ek", 0.5) + "\n"
    )  # fmt: skip
    with tarfile.open(language / "audio" / "dev.tar.gz", "w:gz") as tar:  # the Hub ships audio as archives
        tar.add(write(tmp_path / "staging" / "3.wav", wav_bytes(0.75)), arcname="dev/3.wav")
    (language / "dev.tsv").write_text(fleurs_tsv_line("3.wav", "Do", "do", 0.75) + "\n")
    (language / "test.tsv").write_text(fleurs_tsv_line("gone.wav", "Teen", "teen", 1.0) + "\n")

    fleurs = load_fleurs("hi_in", path=str(tmp_path / "fleurs"))
    assert set(fleurs) == {"train", "dev", "test"}
    assert_common_schema(fleurs["train"])
    assert fleurs["train"]["transcript"] == ["namaste duniya", "ek"]
    assert fleurs["train"]["raw_transcription"] == ["Namaste, Duniya!", "Ek."]
    assert fleurs["train"]["language"] == ["hi", "hi"] and fleurs["train"]["duration"] == [1.0, 0.5]
    assert fleurs["dev"]["utterance_id"] == ["3"]
    _, report = validate(fleurs["dev"])
    assert report.num_skipped == 0
    _, report = validate(fleurs["test"])
    assert report.counts == {"unreadable": 1}


def test_load_fleurs_bad_tsv_line_names_file_and_line(tmp_path):
    (tmp_path / "hi_in").mkdir()
    (tmp_path / "hi_in" / "train.tsv").write_text(fleurs_tsv_line("1.wav", "a", "a", 1) + "\nonly\ttwo\n")
    with pytest.raises(ValueError, match=r"train.tsv:2"):
        load_fleurs("hi_in", path=str(tmp_path))


def test_load_fleurs_parquet_variant(tmp_path):
    for split, seconds in (("train", 1.0), ("validation", 0.5)):
        row = {"id": 7, "num_samples": int(seconds * SR), "path": f"{split}/7.wav",
               "audio": {"bytes": wav_bytes(seconds), "path": f"{split}/7.wav"},
               "transcription": "ek  do", "raw_transcription": "Ek, do.", "gender": 1, "lang_id": 30,
               "language": "Hindi", "lang_group_id": 4}  # fmt: skip
        parquet = tmp_path / "hi_in" / split / "0000.parquet"
        parquet.parent.mkdir(parents=True)
        Dataset.from_list([row]).cast_column("audio", Audio()).to_parquet(str(parquet))
    fleurs = load_fleurs("hi_in", path=str(tmp_path))
    assert set(fleurs) == {"train", "dev"}
    assert_common_schema(fleurs["train"])
    assert fleurs["dev"][0]["transcript"] == "ek do" and fleurs["dev"][0]["duration"] == 0.5
    assert fleurs["train"][0]["utterance_id"] == "7" and fleurs["train"][0]["language"] == "hi"


@pytest.mark.parametrize("manifest", ["manifest.csv", "manifest.jsonl"])
def test_load_folder(tmp_path, manifest):
    write(tmp_path / "clips" / "a.wav", wav_bytes(1.0))
    write(tmp_path / "clips" / "b.wav", wav_bytes(0.5, sample_rate=8000))
    write(tmp_path / "pics" / "cat.png", png_bytes())
    rows = [
        {"audio": "clips/a.wav", "transcript": " a  cat ", "image": "pics/cat.png", "speaker": "7", "note": "x"},
        {"audio": "clips/b.wav", "language": "en", "transcript": "", "image": "", "speaker": "", "note": "y"},
    ]
    if manifest.endswith(".csv"):
        with open(tmp_path / manifest, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["audio", "language", "transcript", "image", "speaker", "note"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        (tmp_path / manifest).write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    folder = load_folder(tmp_path, language="ta")
    assert_common_schema(folder)
    assert folder["language"] == ["ta", "en"] and folder["transcript"] == ["a cat", ""]
    assert folder["image_id"] == ["pics/cat.png", ""] and folder[1]["image"] is None
    assert folder["duration"] == [1.0, 0.5] and folder["utterance_id"] == ["a", "b"]
    assert folder["note"] == ["x", "y"]
    assert load_image(folder[0]["image"]).size == (8, 8)


def test_load_folder_errors_name_the_manifest_row(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_folder(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"audio": "a.wav"}\n{"transcript": "no audio"}\n')
    with pytest.raises(ValueError, match=r"manifest.jsonl:2"):
        load_folder(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"audio": "a.wav"}\n{not json\n')
    with pytest.raises(ValueError, match=r"manifest.jsonl:2"):
        load_folder(tmp_path)


# ---------------------------------------------------------------- validate


def bad_rows(tmp_path) -> tuple[Dataset, dict[str, str]]:
    """One row per skip reason (utterance_id = the reason), plus two good rows."""
    good_image = {"bytes": None, "path": write(tmp_path / "ok.png", png_bytes())}
    truncated = wav_bytes(1.0)
    cases = {
        "good": {"audio": wav_bytes(1.0)},
        "good_too": {"audio": wav_bytes(0.5, sample_rate=44100), "image": good_image},
        "unreadable": {"audio": b"RIFF garbage, not a wave file"},
        "truncated": {"audio": truncated[: len(truncated) // 2]},
        "empty": {"audio": b""},
        "non_finite": {"audio": wav_bytes(1.0, subtype="FLOAT", value=np.nan)},
        "too_short": {"audio": wav_bytes(0.05)},
        "too_long": {"audio": wav_bytes(3.0)},
        "missing_image": {"audio": wav_bytes(1.0), "image": {"bytes": None, "path": str(tmp_path / "gone.png")}},
        "corrupt_image": {"audio": wav_bytes(1.0), "image": {"bytes": png_bytes()[:40], "path": None}},
        "empty_transcript": {"audio": wav_bytes(1.0), "transcript": "  "},
        "uncovered_characters": {"audio": wav_bytes(1.0), "transcript": "नमस्ते"},
        "unknown_language": {"audio": wav_bytes(1.0), "language": "xx"},
    }
    rows = [
        {"audio": {"bytes": case["audio"], "path": None}, "language": case.get("language", "en"),
         "transcript": case.get("transcript", "a cat"), "image_id": "", "image": case.get("image"),
         "speaker": "", "duration": None, "utterance_id": name}
        for name, case in cases.items()
    ]  # fmt: skip
    return Dataset.from_list(rows).cast_column("audio", Audio(decode=False)).cast_column("image", Image(decode=False))


def covered_by_ascii(text: str) -> set[str]:
    return {character for character in text if not character.isascii()}


VALIDATE_KWARGS = {"languages": {"en"}, "is_covered": covered_by_ascii, "require_transcript": True,
                   "min_seconds": 0.1, "max_seconds": 2.0}  # fmt: skip


def test_validate_counts_every_reason(tmp_path):
    dataset = bad_rows(tmp_path)
    kept, report = validate(dataset, **VALIDATE_KWARGS)
    expected = {name: 1 for name in dataset["utterance_id"] if not name.startswith("good")}
    assert set(expected) | {"missing_image_embedding"} == set(SKIP_REASONS)  # every reason is exercised
    assert dict(report.counts) == expected
    assert all(report.examples[reason] == [reason] for reason in expected)
    assert report.num_rows == dataset.num_rows and report.num_skipped == len(expected)
    assert kept["utterance_id"] == ["good", "good_too"]
    assert kept["duration"] == pytest.approx([1.0, 0.5])  # measured on the decoded audio
    for reason in expected:
        assert reason in report.summary()


def test_validate_accepts_a_boolean_coverage_check(tmp_path):
    dataset = bad_rows(tmp_path).select([0, 11])
    _, report = validate(dataset, is_covered=str.isascii)
    assert dict(report.counts) == {"uncovered_characters": 1}


def test_validate_strict_raises_naming_the_row(tmp_path):
    dataset = bad_rows(tmp_path).select([0, 4])
    with pytest.raises(DataError) as error:
        validate(dataset, strict=True)
    assert error.value.reason == "empty" and "empty" in str(error.value)


def test_validate_streaming_counts_as_it_goes(tmp_path):
    dataset = bad_rows(tmp_path)
    stream, report = validate(dataset.to_iterable_dataset(), **VALIDATE_KWARGS)
    assert [row["utterance_id"] for row in stream] == ["good", "good_too"]
    kept, eager_report = validate(dataset, **VALIDATE_KWARGS)
    assert report.counts == eager_report.counts and report.num_rows == eager_report.num_rows


# ---------------------------------------------------------------- batches


def speech_durations(count: int = 3000, seed: int = 0) -> np.ndarray:
    """Utterance lengths shaped like read/prompted speech: log-normal, median ~5 s, clipped to [0.5, 25] s."""
    return np.clip(np.random.default_rng(seed).lognormal(np.log(5.0), 0.6, count), 0.5, 25.0)


def test_sampler_covers_every_row_once_within_budget():
    durations = speech_durations()
    sampler = DurationBucketSampler(durations, max_seconds_per_batch=100.0, num_buckets=8, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(len(durations)))
    assert all(len(batch) * durations[batch].max() <= 100.0 for batch in batches)
    capped = DurationBucketSampler(durations, max_seconds_per_batch=100.0, max_batch_size=4)
    assert max(len(batch) for batch in capped) == 4


def test_sampler_is_deterministic_per_epoch_and_resumes():
    durations = speech_durations(500)
    first, second = (DurationBucketSampler(durations, 60.0, seed=1) for _ in range(2))
    assert list(first) == list(second)
    first.set_epoch(1)
    epoch_one = list(first)
    assert epoch_one != list(second)
    second.set_epoch(1)
    second.skip_first_batches(5)
    assert len(second) == len(epoch_one) - 5
    assert list(second) == epoch_one[5:]
    assert list(second) == epoch_one  # skipping happens once
    other_seed = DurationBucketSampler(durations, 60.0, seed=2)
    assert other_seed.epoch_batches() != DurationBucketSampler(durations, 60.0, seed=1).epoch_batches()


def test_sampler_drop_last_and_bad_durations():
    durations = speech_durations(200)
    kept = [i for batch in DurationBucketSampler(durations, 60.0, num_buckets=4, drop_last=True) for i in batch]
    assert len(kept) < len(durations) and len(set(kept)) == len(kept)
    with pytest.raises(ValueError, match="row 3"):
        DurationBucketSampler([1.0, 2.0, 3.0, 90.0], max_seconds_per_batch=60.0)
    with pytest.raises(ValueError, match="row 1"):
        DurationBucketSampler([1.0, float("nan")], max_seconds_per_batch=60.0)


def test_bucketing_pads_less_than_random_batches():
    durations = speech_durations()
    bucketed = padding_fraction(DurationBucketSampler(durations, 200.0, num_buckets=20), durations)
    random = padding_fraction(DurationBucketSampler(durations, 200.0, num_buckets=1), durations)
    assert bucketed < random / 3
    assert padding_fraction([[0, 1]], [1.0, 3.0]) == pytest.approx(1 / 3)


def test_sampler_with_accelerate_and_resume():
    from accelerate import Accelerator, skip_first_batches

    durations = speech_durations(300)
    sampler = DurationBucketSampler(durations, 60.0, seed=4)
    loader = Accelerator(cpu=True).prepare(DataLoader(list(range(300)), batch_sampler=sampler, collate_fn=list))
    sampler.set_epoch(2)
    loader.set_epoch(2)
    expected = sampler.epoch_batches()
    assert list(loader) == expected
    loader.set_epoch(2)
    assert list(skip_first_batches(loader, 3)) == expected[3:]


# ---------------------------------------------------------------- collator


COLLATOR_SECONDS = (1.0, 0.5, 0.75)


def collator_rows() -> list[dict]:
    return [
        {"audio": {"bytes": wav_bytes(seconds), "path": None}, "language": "en", "transcript": text,
         "image_id": image_id, "utterance_id": f"u{i}"}
        for i, (seconds, text, image_id) in enumerate(zip(COLLATOR_SECONDS, ["a cat", "dog", "red cats"], ["i0", "i1", "i0"]))
    ]  # fmt: skip


def test_collator_shapes_labels_and_image_embeddings():
    rows, tokenizer = collator_rows(), char_tokenizer()
    embeddings = torch.randn(2, 6)
    feature_extractor = ParakeetFeatureExtractor()
    collator = SpeechCollator(feature_extractor, tokenizer, image_embeddings=(["i0", "i1"], embeddings))
    batch = collator(rows)
    frames = [int(seconds * SR) // feature_extractor.hop_length for seconds in COLLATOR_SECONDS]
    batch_size, num_frames, num_mels = batch["input_features"].shape
    assert (batch_size, num_mels) == (3, feature_extractor.feature_size) and num_frames >= max(frames)
    assert batch["attention_mask"].shape == (3, num_frames)
    assert batch["attention_mask"].sum(-1).tolist() == frames
    label_ids = tokenizer([row["transcript"] for row in rows])["input_ids"]
    assert batch["labels"].shape == (3, max(map(len, label_ids)))
    for row_labels, ids in zip(batch["labels"], label_ids):
        assert row_labels[: len(ids)].tolist() == ids and (row_labels[len(ids) :] == -100).all()
    torch.testing.assert_close(batch["image_embeddings"], embeddings[[0, 1, 0]])
    assert batch["utterance_id"] == ["u0", "u1", "u2"] and batch["language"] == ["en"] * 3
    assert batch["skipped"] == [] and collator.skip_report.num_rows == 3


def test_collator_drops_and_counts_bad_rows():
    rows = collator_rows()
    rows[1]["audio"] = {"bytes": b"broken", "path": None}
    rows[2]["image_id"] = "unknown"
    collator = SpeechCollator(ParakeetFeatureExtractor(), image_embeddings={"i0": torch.ones(4), "i1": torch.zeros(4)})
    batch = collator(rows)
    assert batch["utterance_id"] == ["u0"] and batch["image_embeddings"].shape == (1, 4)
    assert batch["skipped"] == [("unreadable", "u1"), ("missing_image_embedding", "u2")]
    assert collator.skip_report.counts == {"unreadable": 1, "missing_image_embedding": 1}
    assert collator(rows[1:]) is None and collator.skip_report.num_skipped == 4


def test_collator_augments_per_epoch_and_utterance_reproducibly():
    rows, extractor = collator_rows(), ParakeetFeatureExtractor()
    augmentation = AudioAugmentation(speed_perturbation=0.1, reverb_probability=1.0, noise_probability=1.0, seed=3)
    plain = SpeechCollator(extractor)(rows)
    augmented = SpeechCollator(extractor, augmentation=augmentation)
    first = augmented(rows)
    assert first["attention_mask"].sum(-1).tolist() != plain["attention_mask"].sum(-1).tolist()  # speed changed
    again = SpeechCollator(extractor, augmentation=augmentation)(rows)  # a resumed run redraws the same
    torch.testing.assert_close(again["input_features"], first["input_features"])
    augmented.set_epoch(1)
    assert not torch.equal(augmented(rows)["attention_mask"], first["attention_mask"])  # a new epoch, new draws
    off = SpeechCollator(extractor, augmentation=AudioAugmentation())  # everything off: the plain features
    torch.testing.assert_close(off(rows)["input_features"], plain["input_features"])
