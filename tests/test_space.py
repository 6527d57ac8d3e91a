"""The Gradio Space: input checks, language detection, word timestamps, the gallery, the examples and their
transcripts, the live endpoints (gradio_client: transcription, aligned vs baseline, retrieval, good and bad uploads)
and a headless-Chromium screenshot of the page."""

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset, DatasetDict  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel  # noqa: E402
from transformers.models.parakeet import ParakeetFeatureExtractor  # noqa: E402

import gradio as gr  # noqa: E402
from avalign.modeling import (  # noqa: E402
    FastConformerAlignmentConfig,
    FastConformerConfig,
    FastConformerCTCTDTConfig,
    FastConformerForCTCTDT,
    FastConformerForImageAlignment,
    train_tokenizer,
)
from avalign.spaces import app  # noqa: E402
from avalign.training.corpus import synth  # noqa: E402
from avalign.training.corpus.lexicons import LEXICONS  # noqa: E402
from avalign.training.corpus.scenes import sample_scene  # noqa: E402
from avalign.training.evaluation.asr_error_rates import error_rates  # noqa: E402
from avalign.training.roman.deromanize import CharTransliterator  # noqa: E402
from avalign.training.roman.romanize import romanize_text  # noqa: E402
from avalign.training.schema import LANGUAGES  # noqa: E402
from avalign.training.teacher import EMBEDDINGS_FILE  # noqa: E402

RUN_LANGUAGES = ("hi", "ta", "en")
SAMPLE_RATE = 16000
CHROMIUM = "/usr/bin/chromium"


# ----------------------------------------------------------------------------- a tiny run directory
def corpus_test_split(languages) -> DatasetDict:
    rows = [row for language in languages for row in synth.generate_block("test", language, synth.PRESETS["smoke"], 0)]
    return DatasetDict({"test": Dataset.from_list(rows, features=synth.FEATURES).cast_column("audio", synth.AUDIO)})


def save_tiny_teacher(folder) -> int:
    """A random tiny SigLIP saved like a pipeline teacher; returns its image-embedding dim."""
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = dict(tower, vocab_size=16, max_position_embeddings=8, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = SiglipConfig(text_config=text, vision_config=dict(tower, image_size=32, patch_size=16))
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return config.vision_config.hidden_size


def save_stage_model(model, folder, tokenizer=None):
    model.save_pretrained(folder)
    ParakeetFeatureExtractor().save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """corpus (test split), teacher, align, asr/aligned-f1.0 and asr/baseline-f1.0 of a pipeline run, all tiny and
    untrained (the two ASR models from different random weights)."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    corpus = corpus_test_split(RUN_LANGUAGES)
    corpus.save_to_disk(str(run / "corpus"))
    embedding_dim = save_tiny_teacher(run / "teacher")
    encoder = FastConformerConfig.from_preset("tiny").to_dict()
    tokenizer = train_tokenizer(corpus["test"]["transcript"], vocab_size=300)
    asr_config = FastConformerCTCTDTConfig(encoder_config=encoder, vocab_size=len(tokenizer), decoder_hidden_size=32)
    for system in ("aligned", "baseline"):
        save_stage_model(FastConformerForCTCTDT(asr_config), run / "asr" / f"{system}-f1.0", tokenizer)
    align_config = FastConformerAlignmentConfig(encoder_config=encoder, image_embedding_dim=embedding_dim)
    align = FastConformerForImageAlignment(align_config)
    save_stage_model(align, run / "align")
    return run


@pytest.fixture(scope="session")
def corpus_clips(run_dir, tmp_path_factory) -> list:
    """The Space's examples of the tiny run: one corpus test clip per language, with its transcript."""
    return app.write_examples(run_dir, tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="session")
def random_gallery(tmp_path_factory, run_dir) -> tuple:
    """A hand-made gallery folder: a few PIL images and random unit embeddings of the align model's dim."""
    folder = tmp_path_factory.mktemp("gallery")
    colours = ["red", "green", "blue", "yellow"]
    for colour in colours:
        PIL.Image.new("RGB", (48, 48), colour).save(folder / f"{colour}.png")
    images = [{"file": f"{colour}.png", "caption": f"a {colour} square", "image_id": colour} for colour in colours]
    (folder / app.GALLERY_FILE).write_text(json.dumps({"teacher": {}, "images": images, "skipped": {}}))
    dim = json.loads((run_dir / "align" / "config.json").read_text())["image_embedding_dim"]
    embeddings = torch.nn.functional.normalize(torch.randn(len(colours), dim), dim=-1)
    save_file({"embeddings": embeddings}, folder / app.GALLERY_EMBEDDINGS_FILE)
    return folder, embeddings


# ----------------------------------------------------------------------------- audio files
def tone(seconds: float, amplitude: float = 0.3, frequency: float = 220.0) -> np.ndarray:
    time_axis = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * frequency * time_axis)).astype(np.float32)


def write_wav(path, samples: np.ndarray):
    sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """A good clip and one file of each bad kind, keyed by what is wrong with it."""
    folder = tmp_path_factory.mktemp("clips")
    good = write_wav(folder / "speech.wav", tone(2.0))
    data = good.read_bytes()
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    (folder / "text.wav").write_text("this is a text file, not audio\n")
    PIL.Image.new("RGB", (8, 8), "red").save(folder / "picture.png")
    return {
        "good": good,
        "text_as_wav": folder / "text.wav",
        "truncated": folder / "truncated.wav",
        "silent": write_wav(folder / "silent.wav", np.zeros(SAMPLE_RATE * 2, np.float32)),
        "overlong": write_wav(folder / "overlong.wav", tone(app.MAX_SECONDS + 1)),
        "png": folder / "picture.png",
    }


BAD_UPLOADS = {  # kind -> words the message must contain
    "text_as_wav": "not a readable audio file",
    "truncated": "cut short",
    "silent": "silent",
    "overlong": "too long",
    "png": "not an audio file",
}


def character_error_rate(hypothesis: str, reference: str) -> float:
    return error_rates([hypothesis], [reference])["cer"]


# ----------------------------------------------------------------------------- unit tests
@pytest.mark.parametrize("kind", sorted(BAD_UPLOADS))
def test_read_upload_rejects_bad_files_with_their_name(clips, kind):
    with pytest.raises(gr.Error) as caught:
        app.read_upload(str(clips[kind]))
    assert BAD_UPLOADS[kind] in caught.value.message
    assert clips[kind].name in caught.value.message


def test_read_upload_accepts_speech_and_checks_size(clips, tmp_path, monkeypatch):
    samples = app.read_upload(str(clips["good"]))
    assert samples.dtype == np.float32 and len(samples) == 2 * SAMPLE_RATE
    monkeypatch.setattr(app, "MAX_FILE_BYTES", clips["good"].stat().st_size - 1)
    with pytest.raises(gr.Error, match="MB limit"):
        app.read_upload(str(clips["good"]))
    with pytest.raises(gr.Error, match="No audio"):
        app.read_upload(None)


def test_language_detection_on_corpus_sentences():
    rng = np.random.default_rng(0)
    for language in LANGUAGES:
        lexicon = LEXICONS[language]
        for template in [*lexicon.templates, *lexicon.ood_templates]:
            sentence = lexicon.sentence(template, sample_scene(rng))
            assert f"({language}), detected" in app.describe_language(sentence), (language, sentence)
    assert app.describe_language("कुछ भी", chosen="mr") == "Marathi (mr), chosen"
    assert app.describe_language("123 !").startswith("unknown: the transcript has no letters")
    assert "Cyrillic" in app.describe_language("привет мир")


def test_word_timestamps_split_at_word_boundaries(run_dir):
    tokenizer = app.AutoTokenizer.from_pretrained(run_dir / "asr" / "aligned-f1.0")
    text = LEXICONS["hi"].sentence("t1", sample_scene(np.random.default_rng(1)))
    ids = tokenizer.encode(text, add_special_tokens=False)
    frames = list(range(0, 2 * len(ids), 2))
    rows = app.word_timestamps(tokenizer, ids, frames, [1] * len(ids), frame_seconds=0.08, audio_seconds=60.0)
    assert [row[0] for row in rows] == text.split()
    starts, ends = [row[1] for row in rows], [row[2] for row in rows]
    assert starts == sorted(starts) and all(start < end for start, end in zip(starts, ends))
    assert ends[-1] == pytest.approx((frames[-1] + 1) * 0.08)
    capped = app.word_timestamps(tokenizer, ids, frames, [4] * len(ids), frame_seconds=0.08, audio_seconds=0.5)
    assert max(row[2] for row in capped) == 0.5


def test_build_gallery_computes_then_reuses_teacher_embeddings(run_dir, tmp_path):
    first = app.load_gallery(app.build_gallery(run_dir, tmp_path / "first"))
    assert (run_dir / "embeddings" / EMBEDDINGS_FILE).is_file()  # computed with run/teacher, cached in the run
    assert first.image_ids == [f"test-{language}-img00000" for language in RUN_LANGUAGES]
    assert all(caption and file.is_file() for caption, file in zip(first.captions, first.files))
    torch.testing.assert_close(first.embeddings.norm(dim=-1), torch.ones(len(first)))
    assert len({tuple(row) for row in first.embeddings.tolist()}) == len(first), "distinct images share an embedding"
    second = app.load_gallery(app.build_gallery(run_dir, tmp_path / "second", max_images=2))
    assert second.image_ids == first.image_ids[:2]
    torch.testing.assert_close(second.embeddings, first.embeddings[:2])


def test_build_gallery_without_embeddings_or_teacher_says_so(run_dir, tmp_path):
    shutil.copytree(run_dir / "corpus", tmp_path / "run" / "corpus")
    with pytest.raises(ValueError, match="no teacher/ to embed them"):
        app.build_gallery(tmp_path / "run", tmp_path / "gallery")


def test_model_is_required(monkeypatch):
    monkeypatch.delenv("AVALIGN_MODEL", raising=False)
    with pytest.raises(SystemExit):
        app.parse_args([])


def test_load_gallery_names_what_is_wrong(random_gallery, tmp_path):
    folder, _ = random_gallery
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "red.png").unlink()
    with pytest.raises(ValueError, match="missing: \\['red.png'\\]"):
        app.load_gallery(broken)
    save_file({"embeddings": torch.randn(2, 3)}, broken / app.GALLERY_EMBEDDINGS_FILE)
    with pytest.raises(ValueError, match="shape \\(2, 3\\) but gallery.json lists 4 images"):
        app.load_gallery(broken)
    with pytest.raises(ValueError, match="gallery.json is missing"):
        app.load_gallery(tmp_path)


def test_stage3_folder_alone_disables_retrieval_with_a_message(run_dir, clips):
    space = app.load_space(app.parse_args(["--model", str(run_dir / "asr" / "aligned-f1.0")]))
    assert space.gallery is None and space.examples == []
    with pytest.raises(gr.Error, match="Image retrieval is disabled.*--align-model and --gallery"):
        space.retrieve_images(str(clips["good"]))
    tdt_text, ctc_text, language, words, native = space.transcribe(str(clips["good"]))
    assert " ".join(row[0] for row in words) == " ".join(tdt_text.split())
    assert not space.romanized and native == tdt_text  # a native-script model's transcript is already native
    with pytest.raises(gr.Error, match="Aligned vs baseline is disabled.*--baseline-model.*asr/baseline-f1.0/"):
        space.compare(str(clips["good"]))


def test_roman_target_model_shows_romanized_and_native_output(run_dir, clips, tmp_path):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    for system in ("aligned", "baseline"):
        roman_dir = shutil.copytree(run / "asr" / f"{system}-f1.0", run / "asr" / f"roman-{system}-f1.0")
        config = json.loads((roman_dir / "config.json").read_text())
        (roman_dir / "config.json").write_text(json.dumps({**config, "targets": "roman"}))
    deromanizer = CharTransliterator.from_words([("hi", "namaste", "नमस्ते"), ("ta", "vanakkam", "வணக்கம்")])
    deromanizer.save(run / "deromanizer")
    space = app.load_space(app.parse_args(["--model", str(run), "--targets", "roman"]))
    assert space.romanized and isinstance(space.deromanizer, CharTransliterator)
    tdt_text, _, _, _, native = space.transcribe(str(clips["good"]), "hi")
    assert native == deromanizer.deromanize([tdt_text], ["hi"])[0]
    assert "choose the language" in space.transcribe(str(clips["good"]), "auto")[4]
    space.deromanizer = None
    assert "--deromanizer" in space.native_script("namaste", "hi")
    hindi = next(example for example in space.examples if example.language == "hi")
    reference, aligned_tdt, *_, scores = space.compare(str(hindi.path))
    romanized = romanize_text(reference, "hi")
    assert reference == hindi.transcript and romanized != reference
    assert scores[0][1] == round(character_error_rate(aligned_tdt, romanized), 4)  # scored in the model's script
    mixed = ["--model", str(run / "asr" / "roman-aligned-f1.0"), "--baseline-model", str(run / "asr" / "baseline-f1.0")]
    with pytest.raises(ValueError, match="writes native targets but --model writes roman targets"):
        app.load_space(app.parse_args(mixed))


def test_unified_model_writes_the_native_script_of_the_chosen_language(run_dir, clips, unified_model_dir, tmp_path):
    folder = unified_model_dir[0]
    assert app.load_space(app.parse_args(["--model", str(run_dir)])).unified is None  # no unified/: no such tab
    run = tmp_path / "run"
    for entry in run_dir.iterdir():
        (run / entry.name).parent.mkdir(exist_ok=True)
        (run / entry.name).symlink_to(entry)
    (run / "unified").mkdir()
    (run / "unified" / "zeroshot-hi-aligned").symlink_to(folder)
    args = app.parse_args(["--model", str(run / "asr" / "aligned-f1.0"), "--unified-model", str(folder)])
    for space in (app.load_space(args), app.load_space(app.parse_args(["--model", str(run)]))):
        native = space.transcribe_unified(str(clips["good"]), "hi")
        assert native == space.unified.generate(audio=[app.read_upload(str(clips["good"]))], languages=["hi"])[0]
    with pytest.raises(gr.Error, match="writes hi only"):
        space.transcribe_unified(str(clips["good"]), "ta")
    labels = {getattr(block, "label", None) for block in app.build_demo(args).blocks.values()}
    assert "Native script (unified model)" in labels


def test_stage3_folder_with_align_model_and_gallery(run_dir, random_gallery, clips):
    folder, embeddings = random_gallery
    args = ["--model", str(run_dir / "asr" / "aligned-f1.0"), "--align-model", str(run_dir / "align"),
            "--gallery", str(folder)]  # fmt: skip
    space = app.load_space(app.parse_args(args))
    images, table = space.retrieve_images(str(clips["good"]), top_k=4)
    inputs = app.audio_features(space.align_feature_extractor, app.read_upload(str(clips["good"])))
    audio_embeds, _ = space.align_model.embed_audio(inputs.input_features, inputs.attention_mask)
    expected = (audio_embeds @ embeddings.T)[0].sort(descending=True)
    assert [row[3] for row in table] == pytest.approx(expected.values.tolist(), abs=1e-4)
    assert [row[1] for row in table] == [space.gallery.image_ids[i] for i in expected.indices.tolist()]
    assert [caption for _, caption in images][0].startswith("1. a ")


def test_gallery_of_another_embedding_dim_is_refused(run_dir, tmp_path, random_gallery):
    folder, embeddings = random_gallery
    shutil.copytree(folder, tmp_path / "wide")
    wider = torch.randn(len(embeddings), embeddings.shape[1] + 1)
    save_file({"embeddings": wider}, tmp_path / "wide" / app.GALLERY_EMBEDDINGS_FILE)
    args = ["--model", str(run_dir), "--gallery", str(tmp_path / "wide")]
    with pytest.raises(ValueError, match="different vision teachers"):
        app.load_space(app.parse_args(args))


def test_write_examples_keeps_each_clips_transcript(run_dir, corpus_clips, tmp_path):
    test_split = app.load_embedded(run_dir / "corpus")["test"]
    first = {language: test_split[test_split["language"].index(language)] for language in RUN_LANGUAGES}
    assert [example.language for example in corpus_clips] == list(RUN_LANGUAGES)
    for example in corpus_clips:
        row = first[example.language]
        assert example.path.name == f"{row['utterance_id']}.flac" and example.transcript == row["transcript"]
    assert app.load_examples(corpus_clips[0].path.parent) == corpus_clips  # examples.json travels with the clips
    shutil.copy(corpus_clips[0].path, tmp_path)
    assert app.load_examples(tmp_path) == [app.Example(tmp_path / corpus_clips[0].path.name)]  # no examples.json
    shutil.copy(corpus_clips[0].path.parent / app.EXAMPLES_FILE, tmp_path)
    with pytest.raises(ValueError, match="lists 2 missing clip"):
        app.load_examples(tmp_path)


def test_run_directory_brings_its_baseline_and_the_corpus_references(run_dir, corpus_clips, clips):
    space = app.load_space(app.parse_args(["--model", str(run_dir)]))
    baseline = app.AsrSystem.load(run_dir / "asr" / "baseline-f1.0", "--baseline-model")
    samples = app.read_upload(str(clips["good"]))
    assert not space.comparison_disabled and space.baseline.decode(samples) == baseline.decode(samples)
    assert space.asr.decode(samples) != baseline.decode(samples)
    references = [space.reference_transcript(str(example.path)) for example in corpus_clips]  # same bytes, other folder
    assert references == [example.transcript for example in corpus_clips]
    assert space.reference_transcript(str(clips["good"])) == ""


# ----------------------------------------------------------------------------- the live Space
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(model: Path):
    """Start the Space on `model` at a free local port; yields (url, client) and closes it afterwards."""
    port = free_port()
    demo = app.main(["--model", str(model), "--host", "127.0.0.1", "--port", str(port)], prevent_thread_lock=True)
    url = f"http://127.0.0.1:{port}/"
    yield url, Client(url, verbose=False)
    demo.close()


@pytest.fixture(scope="module")
def server(run_dir):
    """The Space on the whole run: both ASR systems, retrieval and the corpus examples."""
    yield from launch(run_dir)


@pytest.fixture(scope="module")
def aligned_only_server(run_dir):
    """The Space on the aligned stage-3 folder alone: no baseline, no retrieval, no examples."""
    yield from launch(run_dir / "asr" / "aligned-f1.0")


def test_transcribe_endpoint(server, clips):
    _, client = server
    good = handle_file(str(clips["good"]))
    tdt_text, ctc_text, language, words, native = client.predict(good, "auto", api_name="/transcribe")
    assert isinstance(tdt_text, str) and isinstance(ctc_text, str)
    assert language.startswith("unknown") or ", detected from the " in language
    rows = words["data"]
    assert words["headers"] == ["word", "start (s)", "end (s)"]
    assert " ".join(row[0] for row in rows) == " ".join(tdt_text.split())
    assert all(0 <= float(row[1]) < float(row[2]) <= 2.0 for row in rows)
    assert native == tdt_text
    _, _, chosen, _, _ = client.predict(handle_file(str(clips["good"])), "ta", api_name="/transcribe")
    assert chosen == "Tamil (ta), chosen"


def test_retrieve_images_endpoint(server, clips, run_dir):
    _, client = server
    images, scores = client.predict(handle_file(str(clips["good"])), 2, api_name="/retrieve_images")
    assert len(images) == 2 and len(scores["data"]) == 2
    cosines = [float(row[3]) for row in scores["data"]]
    assert cosines == sorted(cosines, reverse=True) and all(-1 <= value <= 1 for value in cosines)
    assert all(row[1].startswith("test-") for row in scores["data"])
    assert all(image["caption"].startswith(f"{rank}. ") for rank, image in enumerate(images, start=1))


def test_compare_endpoint_shows_both_systems_and_the_reference(server, run_dir, corpus_clips):
    _, client = server
    systems = [app.AsrSystem.load(run_dir / "asr" / f"{name}-f1.0", "--model") for name in ("aligned", "baseline")]
    for example in corpus_clips:
        reference, *transcripts, scores = client.predict(handle_file(str(example.path)), api_name="/compare")
        assert reference == example.transcript
        decodings = [system.decode(app.read_upload(str(example.path))) for system in systems]
        expected = [text for decoding in decodings for text in (decoding.tdt, decoding.ctc)]
        assert transcripts == expected  # aligned TDT, aligned CTC, baseline TDT, baseline CTC
        assert scores["headers"] == ["system", "CER (TDT)", "CER (CTC)"]
        assert [row[0] for row in scores["data"]] == ["aligned", "baseline"]
        rates = [rate for row in scores["data"] for rate in row[1:]]
        assert rates == pytest.approx([character_error_rate(text, reference) for text in expected], abs=1e-4)


def test_compare_of_an_own_clip_has_no_reference(server, clips):
    _, client = server
    reference, *transcripts, scores = client.predict(handle_file(str(clips["good"])), api_name="/compare")
    assert reference == "" and scores["data"] == [] and all(isinstance(text, str) for text in transcripts)


def test_compare_without_baseline_says_how_to_enable_it(aligned_only_server, clips):
    _, client = aligned_only_server
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(clips["good"])), api_name="/compare")
    for part in ("Aligned vs baseline is disabled", "--baseline-model", "AVALIGN_BASELINE_MODEL", "asr/baseline-f1.0/"):
        assert part in str(caught.value)
    texts = json.dumps([component.get("props", {}).get("value") for component in client.config["components"]])
    assert "Aligned vs baseline is disabled" in texts  # the tab says so too


@pytest.mark.parametrize("kind", sorted(BAD_UPLOADS))
def test_bad_uploads_get_a_clear_message(server, clips, kind):
    _, client = server
    for api_name, extra in (("/transcribe", ["auto"]), ("/compare", []), ("/retrieve_images", [3])):
        with pytest.raises(AppError) as caught:
            client.predict(handle_file(str(clips[kind])), *extra, api_name=api_name)
        assert BAD_UPLOADS[kind] in str(caught.value)
        assert "Traceback" not in str(caught.value)


def test_server_stays_up_after_bad_uploads(server, clips):
    _, client = server
    for kind in BAD_UPLOADS:
        with pytest.raises(AppError):
            client.predict(handle_file(str(clips[kind])), "auto", api_name="/transcribe")
    tdt_text, _, _, words, _ = client.predict(handle_file(str(clips["good"])), "auto", api_name="/transcribe")
    assert words["headers"] == ["word", "start (s)", "end (s)"] and isinstance(tdt_text, str)


def test_example_clips_come_from_the_corpus_with_their_transcripts(server, corpus_clips):
    _, client = server
    tables = [component["props"] for component in client.config["components"] if component.get("type") == "dataset"]
    assert len(tables) == 3, "one table of corpus clips per tab"
    for table in tables:
        assert [row[1] for row in table["samples"]] == [example.transcript for example in corpus_clips]
        assert all(example.path.name in json.dumps(row[0]) for row, example in zip(table["samples"], corpus_clips))


# ----------------------------------------------------------------------------- headless screenshot
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing and running as root; skips only if impossible."""
    if not os.path.exists(CHROMIUM) and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=600)
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing and could not be installed (apt-get needs root and a package mirror)")
    return CHROMIUM


def run_chromium(url: str, profile, *action) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1280,1600", "--virtual-time-budget=10000"]  # fmt: skip
    return subprocess.run([chromium(), *flags, *action, url], capture_output=True, text=True, timeout=120)


def test_page_screenshot_and_labels(server, tmp_path):
    url, _ = server
    screenshot = tmp_path / "space.png"
    run_chromium(url, tmp_path / "profile", f"--screenshot={screenshot}")
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    image = PIL.Image.open(screenshot).convert("RGB")
    assert image.size == (1280, 1600)
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 50  # text and widgets, not a blank page
    dom = run_chromium(url, tmp_path / "profile", "--dump-dom").stdout
    labels = ("Speech", "Transcript (TDT)", "Transcript (CTC)", "Language", "Word timestamps", "Aligned vs baseline",
              "Image retrieval", "Reference transcript")  # fmt: skip
    for label in labels:
        assert label in dom, label
