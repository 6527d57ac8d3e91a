"""The embedded corpus generator (training/corpus/: synth.py, scenes.py, lexicons.py) on the `smoke` preset."""

import hashlib
import io
import json
import math
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf
from datasets import Image, load_from_disk

from avalign.training import schema
from avalign.training.corpus import synth
from avalign.training.corpus.lexicons import LEXICONS
from avalign.training.corpus.scenes import BACKGROUNDS, COLOURS, KINDS, POSITIONS, Scene, render_scene
from avalign.training.schema import LANGUAGES


SMOKE = synth.PRESETS["smoke"]
TEST_LANGUAGES = ("hi", "ta", "en")
SEED = 3


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(output folder, returned stats) of one smoke corpus in three languages."""
    folder = tmp_path_factory.mktemp("smoke")
    return folder, synth.write_corpus(folder, "smoke", TEST_LANGUAGES, seed=SEED, progress=False)


@pytest.fixture(scope="module")
def corpus(written):
    return load_from_disk(str(written[0]))


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# ---------------------------------------------------------------- lexicons and scenes


@pytest.mark.parametrize("language", LANGUAGES)
def test_lexicon_covers_every_scene_value(language):
    lexicon = LEXICONS[language]
    assert set(lexicon.objects) == set(KINDS)
    assert set(lexicon.colours) == set(COLOURS)
    assert set(lexicon.positions) == set(POSITIONS)
    assert len(lexicon.templates) >= 3 and len(lexicon.ood_templates) >= 2
    assert not set(lexicon.templates) & set(lexicon.ood_templates)
    assert not set(lexicon.templates.values()) & set(lexicon.ood_templates.values())
    for kind in KINDS:
        for colour in COLOURS:
            for count in (1, 2, 3):
                phrase = lexicon.noun_phrase(kind, colour, count)
                singular, plural, _ = lexicon.objects[kind]
                assert phrase.startswith(lexicon.numbers[count - 1] + " ")
                assert phrase.endswith(" " + (singular if count == 1 else plural))
    sentence = lexicon.sentence("t1", Scene("star", "green", 2, "top", "mint"))
    assert lexicon.positions["top"] in sentence and lexicon.copula[1] in sentence


def test_sentences_are_in_native_script():
    scripts = {"hi": (0x0900, 0x097F), "mr": (0x0900, 0x097F), "bn": (0x0980, 0x09FF), "pa": (0x0A00, 0x0A7F),
               "gu": (0x0A80, 0x0AFF), "ta": (0x0B80, 0x0BFF), "te": (0x0C00, 0x0C7F), "kn": (0x0C80, 0x0CFF),
               "ml": (0x0D00, 0x0D7F), "en": (ord("a"), ord("z"))}  # fmt: skip
    scene = Scene("house", "blue", 3, "centre", "sand")
    for language, (low, high) in scripts.items():
        lexicon = LEXICONS[language]
        for template_id in {**lexicon.templates, **lexicon.ood_templates}:
            letters = lexicon.sentence(template_id, scene).replace(" ", "")
            assert all(low <= ord(c) <= high for c in letters), (language, template_id)


@pytest.mark.parametrize("kind", KINDS)
def test_render_scene_draws_the_objects(kind):
    scene = Scene(kind, "purple", 2, "right", "mint")
    image = np.asarray(render_scene(scene, np.random.default_rng(0), size=96))
    assert image.shape == (96, 96, 3)
    is_object = (image == COLOURS["purple"]).all(axis=-1)
    assert is_object.sum() > 20
    columns = np.nonzero(is_object.any(axis=0))[0]
    assert columns.min() >= 96 // 2 - 1  # right half only
    background = (image == BACKGROUNDS["mint"]).all(axis=-1)
    assert background[:, : 96 // 2 - 1].all()


# ---------------------------------------------------------------- speakers and audio


def test_speakers_are_distinct_and_held_out_variants_unseen():
    config = synth.PRESETS["demo"]
    in_domain, held_out = synth.make_speakers("kn", config, seed=0)
    assert len(in_domain) == config.in_domain_speakers >= 20 and len(held_out) == config.held_out_speakers
    speakers = in_domain + held_out
    assert len({(s.voice, s.pitch, s.rate) for s in speakers}) == len(speakers)
    assert len({s.id for s in speakers}) == len(speakers) and all(s.id.startswith("kn-spk") for s in speakers)
    variants = lambda group: {s.voice.split("+")[1] for s in group}  # noqa: E731
    assert not variants(in_domain) & variants(held_out)
    assert all(s.voice.startswith("kn+") for s in speakers)


# ---------------------------------------------------------------- the corpus


def test_same_seed_gives_identical_rows_whatever_else_was_generated(corpus):
    # regenerate one block on its own: it must equal the block inside the three-language corpus
    block = synth.generate_block("test_ood", "ta", SMOKE, SEED)
    stored = corpus["test_ood"].filter(lambda row: row["language"] == "ta")
    assert len(block) == len(stored)
    for fresh, saved in zip(block, stored.cast_column("image", Image(decode=False))):
        assert fresh["audio"]["bytes"] == saved["audio"]["bytes"]
        assert fresh["image"]["bytes"] == saved["image"]["bytes"]
        assert (fresh["reference_transcript"], fresh["speaker"]) == (saved["reference_transcript"], saved["speaker"])
    other_seed = synth.generate_block("test_ood", "ta", SMOKE, SEED + 1)
    assert other_seed[0]["audio"]["bytes"] != block[0]["audio"]["bytes"]


def test_schema_and_split_sizes(corpus):
    assert list(corpus) == list(schema.SPLITS)
    for split, dataset in corpus.items():
        assert list(dataset.features) == list(synth.FEATURES)
        assert dataset.features["audio"] == synth.AUDIO
        assert all(dataset.features[name] == synth.FEATURES[name] for name in synth.FEATURES if name != "audio")
        languages = dataset["language"]
        for language in TEST_LANGUAGES:
            assert languages.count(language) == SMOKE.utterances(split)
        assert len(set(dataset["utterance_id"])) == len(dataset)
        columns = ["transcript", "reference_transcript", "image_id", "image_caption", "train_fraction"]
        for row in dataset.select_columns(columns):
            assert row["reference_transcript"]
            assert row["transcript"] == (row["reference_transcript"] if split in schema.TRANSCRIBED_SPLITS else "")
            assert bool(row["image_id"]) == bool(row["image_caption"]) == (split != "unlabeled")
            if split != "train":
                assert row["train_fraction"] == 1.0
    assert all(image is None for image in corpus["unlabeled"]["image"])
    image = corpus["paired"][0]["image"]
    assert image.size == (SMOKE.image_size, SMOKE.image_size) and image.mode == "RGB"


def test_train_fractions_are_nested(corpus):
    train = corpus["train"]
    assert set(train["train_fraction"]) == set(schema.TRAIN_FRACTIONS)
    for language in TEST_LANGUAGES:
        fractions = [f for f, code in zip(train["train_fraction"], train["language"]) if code == language]
        for fraction in schema.TRAIN_FRACTIONS:
            assert sum(f <= fraction for f in fractions) == math.ceil(fraction * len(fractions))


def test_test_side_images_are_disjoint_from_training_images(corpus):
    def images(splits):
        ids, digests = set(), set()
        for split in splits:
            dataset = corpus[split].cast_column("image", Image(decode=False))
            for row in dataset.select_columns(["image_id", "image"]):
                if row["image"] is not None:
                    ids.add(row["image_id"])
                    digests.add(_digest(row["image"]["bytes"]))
        return ids, digests

    train_ids, train_digests = images(schema.TRAIN_SIDE_SPLITS)
    test_ids, test_digests = images(schema.TEST_SIDE_SPLITS)
    assert train_ids and test_ids
    assert not train_ids & test_ids and not train_digests & test_digests


def test_images_have_several_utterances_by_different_speakers(corpus):
    speakers = defaultdict(list)
    for row in corpus["paired"].select_columns(["image_id", "speaker"]):
        speakers[row["image_id"]].append(row["speaker"])
    assert max(len(group) for group in speakers.values()) == SMOKE.utterances_per_image
    assert all(len(set(group)) == len(group) for group in speakers.values())


def test_audio_decodes_at_16_khz_with_plausible_duration(corpus):
    for split in ("unlabeled", "test_ood"):
        for row in corpus[split].select_columns(["audio", "duration", "utterance_id"]):
            samples, sampling_rate = sf.read(io.BytesIO(row["audio"]["bytes"]))
            assert sampling_rate == 16000 and samples.ndim == 1
            assert row["audio"]["path"] == row["utterance_id"] + ".flac"
            assert len(samples) / sampling_rate == pytest.approx(row["duration"])
            assert 0.8 < row["duration"] < 8.0
            assert np.sqrt(np.mean(samples**2)) > 0.01


def test_out_of_domain_templates_and_speakers_are_unseen(corpus):
    ood_templates = {t for language in TEST_LANGUAGES for t in LEXICONS[language].ood_templates}
    seen_speakers = set()
    for split in schema.SPLITS:
        if split in schema.OUT_OF_DOMAIN_SPLITS:
            assert set(corpus[split]["template_id"]) <= ood_templates
        else:
            assert not set(corpus[split]["template_id"]) & ood_templates
            seen_speakers |= set(corpus[split]["speaker"])
    for split in schema.OUT_OF_DOMAIN_SPLITS:
        assert not set(corpus[split]["speaker"]) & seen_speakers
    assert not set(corpus["dev_ood"]["reference_transcript"]) <= set(corpus["test_ood"]["reference_transcript"])


def test_card_and_stats_are_written(written, corpus):
    folder, stats = written
    on_disk = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(stats))
    assert on_disk["generation_seconds"] > 0 and on_disk["languages"] == list(TEST_LANGUAGES)
    for split in schema.SPLITS:
        per_language = on_disk["splits"][split]
        assert per_language["all"]["utterances"] == len(corpus[split])
        assert per_language["all"]["hours"] == pytest.approx(sum(corpus[split]["duration"]) / 3600, abs=1e-4)
        assert per_language["hi"]["utterances"] == SMOKE.utterances(split)
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "\nlanguage:\n- hi\n- ta\n- en\n" in card
    assert "| test_ood | ta |" in card and LEXICONS["ta"].positions["left"] in card
    assert "{{" not in card and "{%" not in card


def test_cli_prints_the_table_and_rejects_unknown_languages(tmp_path, capsys):
    synth.main(["--preset", "smoke", "--output-dir", str(tmp_path / "en"), "--languages", "en", "--seed", "1"])
    printed = capsys.readouterr().out
    assert "| train | en | 10 |" in printed and "| train | **all** | 10 |" in printed
    assert (tmp_path / "en" / "dataset_dict.json").exists()
    with pytest.raises(SystemExit):
        synth.parse_args(["--output-dir", str(tmp_path), "--languages", "xx"])
    with pytest.raises(ValueError, match="unknown language"):
        synth.generate_corpus(SMOKE, ("hi", "zz"), progress=False)
