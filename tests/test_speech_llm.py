"""The unified model (speech -> causal LM, projector + LoRA) and its training script on the smoke corpus, with a tiny
text-only LM: building, saving without the LLM, loading by AutoModel, bounded generation, the held-out language's
speech never read, exact resume after SIGKILL, and the clear errors before training."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from avalign.modeling import FastConformerForCTCTDT, SpeechLLMForConditionalGeneration
from avalign.modeling.modeling_speech_llm import ctc_compress
from avalign.modeling.script_constraint import script_characters
from avalign.training import train_asr, train_speech_llm
from avalign.training.data import batching
from avalign.training.data.splits import load_splits
from avalign.training.roman.deromanize import corpus_pairs, deromanization_prompt
from avalign.training.text_lm import TextLMConfig, train_text_lm, train_tokenizer_for_lm

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "speech_llm_smoke.yaml"
TINY_LM = TextLMConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=400, max_length=96)
LANGUAGES = {"hi": {"name": "Hindi", "script": "Devanagari"}, "en": {"name": "English", "script": "Latin"}}


@pytest.fixture(scope="module")
def romanizer_dir(smoke_corpus, tiny_encoder_dir, tmp_path_factory):
    """A roman-target stage-3 model (a few steps: its quality does not matter here)."""
    folder = tmp_path_factory.mktemp("romanizer")
    train_asr.main(["--config", str(REPO / "training/configs/asr_smoke.yaml"), "--corpus", str(smoke_corpus),
                    "--init_encoder", str(tiny_encoder_dir), "--output_dir", str(folder), "--targets", "roman",
                    "--max_steps", "2", "--eval_steps", "0", "--progress", "false",
                    "--romanization_cache", str(folder / "roman.json")])  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def text_lm_dir(smoke_corpus, tmp_path_factory):
    """A tiny LlamaForCausalLM trained on the smoke corpus's sentences (text only)."""
    from datasets import load_from_disk

    folder = tmp_path_factory.mktemp("text-lm")
    pairs = corpus_pairs(load_from_disk(str(smoke_corpus)), folder / "roman.json")
    train_text_lm([native for _, _, native in pairs], folder, steps=20, config=TINY_LM, batch_size=16)
    return folder


def arguments(corpus, romanizer, llm, output_dir, *extra) -> list[str]:
    return ["--config", str(CONFIG), "--corpus", str(corpus), "--romanizer", str(romanizer), "--llm", str(llm),
            "--output_dir", str(output_dir), "--progress", "false", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def unified_run(smoke_corpus, romanizer_dir, text_lm_dir, tmp_path_factory):
    """train_speech_llm with Hindi held out; every audio decode is recorded."""
    output_dir = tmp_path_factory.mktemp("unified")
    decoded, load_audio = [], batching.load_audio

    def recording_load_audio(*args, source=None, **kwargs):
        decoded.append(source)
        return load_audio(*args, source=source, **kwargs)

    batching.load_audio = recording_load_audio
    try:
        train_speech_llm.main(arguments(smoke_corpus, romanizer_dir, text_lm_dir, output_dir, "--held_out_languages",
                                        "hi", "--text_task_probability", "0.5", "--eval_steps", "3"))  # fmt: skip
    finally:
        batching.load_audio = load_audio
    return output_dir, decoded


def test_the_held_out_language_speech_is_never_read(unified_run):
    output_dir, decoded = unified_run
    assert decoded and all("-en-" in name for name in decoded), decoded[:5]
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["speech_languages"] == ["en"] and metrics["text_sentences"] > 0  # Hindi text still trains
    assert metrics["global_step"] == 6 and [entry["step"] for entry in metrics["eval_history"]] == [3, 6]


def test_the_saved_model_names_its_llm_and_holds_only_what_was_trained(unified_run, text_lm_dir):
    output_dir, _ = unified_run
    config = json.loads((output_dir / "config.json").read_text())
    assert config["llm_name_or_path"] == str(text_lm_dir) and not (output_dir / "llm").exists()
    assert {key.split(".")[0] for key in load_file(output_dir / "model.safetensors")} == {"encoder", "projector"}
    assert (output_dir / "adapter" / "adapter_config.json").is_file()
    model = AutoModel.from_pretrained(output_dir)
    assert isinstance(model, SpeechLLMForConditionalGeneration) and not model.training
    lora = [name for name, _ in model.llm.named_parameters() if "lora_" in name]
    assert lora and all(not parameter.requires_grad for parameter in model.encoder.parameters())


def test_generation_is_bounded_and_takes_audio_or_roman_text(unified_run, smoke_corpus):
    output_dir, _ = unified_run
    model = SpeechLLMForConditionalGeneration.from_pretrained(output_dir)
    audio = [np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)]
    generated, llm_generate = [], model.llm.generate
    model.llm.generate = lambda **inputs: generated.append(llm_generate(**inputs)) or generated[-1]
    assert isinstance(model.generate(audio=audio, languages=["hi"], max_new_tokens=3)[0], str)
    assert generated[0].shape[1] <= 3  # new tokens (B, <= 3)
    assert isinstance(model.generate(roman_texts=["dain or"], languages=["hi"], max_new_tokens=3)[0], str)
    with pytest.raises(ValueError, match="empty audio"):
        model.generate(audio=[np.zeros(0, dtype=np.float32)], languages=["hi"])
    with pytest.raises(ValueError, match="not among the model's"):
        model.generate(audio=audio, languages=["ta"])


def test_generation_ends_at_the_first_newline_as_the_lm_cascades_does(unified_run):
    model = SpeechLLMForConditionalGeneration.from_pretrained(unified_run[0])
    two_lines, calls = model.tokenizer(["दो घर\nतीन"], add_special_tokens=False, return_tensors="pt")["input_ids"], []
    model.llm.generate = lambda **inputs: calls.append(inputs) or two_lines
    assert model.generate(roman_texts=["do ghar"], languages=["hi"]) == ["दो घर"]
    assert calls[0]["stop_strings"] == ["\n"] and calls[0]["tokenizer"] is model.tokenizer


def test_generation_held_to_the_script_writes_only_that_script(unified_run):
    output_dir, _ = unified_run
    model = SpeechLLMForConditionalGeneration.from_pretrained(output_dir)
    audio = [np.random.default_rng(seed).normal(0, 0.1, 16000).astype(np.float32) for seed in range(2)]
    texts = model.generate(audio=audio, languages=["hi", "en"], max_new_tokens=12, constrain_to_script=True)
    for text, script in zip(texts, ["Devanagari", "Latin"]):
        text = text.removesuffix("\ufffd")  # the token budget may end mid-character
        assert set(text) <= script_characters(script), (script, text)


def test_encoder_outputs_computed_once_give_the_live_encoders_loss(unified_run, smoke_corpus):
    model = SpeechLLMForConditionalGeneration.from_pretrained(unified_run[0])
    rows = load_splits(str(smoke_corpus), ["train"], ["en"]).select(range(6))
    cached = train_speech_llm.encoder_outputs(model, rows, max_seconds_per_batch=8.0)  # other batches than below
    assert sorted(cached) == sorted(rows["utterance_id"])
    batches = [train_speech_llm.SpeechLLMCollator(model.feature_extractor, [], 0.0, encoder_outputs=outputs)(list(rows))
               for outputs in (None, cached)]  # fmt: skip
    assert "input_features" in batches[0] and batches[1]["encoder_states"].shape[0] == 6
    assert batches[1]["audio_seconds"] == pytest.approx(sum(rows["duration"]))
    with torch.no_grad():
        live, once = (train_speech_llm.unified_loss(model, batch)[0] for batch in batches)
    torch.testing.assert_close(once, live, rtol=1e-4, atol=1e-4)


def test_a_new_unified_models_frozen_romanizer_runs_without_dropout(romanizer_dir, text_lm_dir, smoke_corpus):
    """The encoder's outputs are cached before training starts: a new model's romanizer must already be in eval mode
    (it was not, and the demo's cached outputs were computed with dropout on), and stay there when the model trains."""
    model = SpeechLLMForConditionalGeneration.from_romanizer(romanizer_dir, text_lm_dir, LANGUAGES)
    assert not model.encoder.training
    model.train()
    assert model.projector.training and not model.encoder.training
    rows = load_splits(str(smoke_corpus), ["train"], ["en"]).select(range(2))
    train_speech_llm.encoder_outputs(model, rows, max_seconds_per_batch=8.0, dropout=True)  # --cache_with_dropout
    assert not model.encoder.training  # its dropout on for that pass only


def test_the_text_task_adds_reading_drills_of_each_languages_words_when_asked(smoke_corpus, tmp_path):
    options = dict(corpus=str(smoke_corpus), romanizer="unused", llm="unused",
                   romanization_cache=str(tmp_path / "roman.json"))  # fmt: skip
    sentences = train_speech_llm.text_pool(train_speech_llm.SpeechLLMArguments(**options), ["hi", "en"])
    pool = train_speech_llm.text_pool(train_speech_llm.SpeechLLMArguments(**options, text_task_drills=True), ["hi", "en"])
    drills = pool[len(sentences):]
    assert pool[: len(sentences)] == sentences and len(drills) == len(sentences) > 0
    words = {(language, roman_word, native_word) for language, roman, native in sentences
             for roman_word, native_word in zip(roman.split(), native.split())}  # fmt: skip
    assert all((language, r, n) in words for language, roman, native in drills
               for r, n in zip(roman.split(), native.split(), strict=True))  # fmt: skip
    assert set(drills) - set(sentences)  # not the sentences again


def test_the_text_task_copies_latin_script_sentences_only_when_asked_and_never_misspells_them(smoke_corpus, tmp_path):
    options = dict(corpus=str(smoke_corpus), romanizer="unused", llm="unused", held_out_languages=["hi"],
                   romanization_cache=str(tmp_path / "roman.json"))  # fmt: skip
    without = train_speech_llm.text_pool(train_speech_llm.SpeechLLMArguments(**options), ["hi", "en"])
    latin = train_speech_llm.SpeechLLMArguments(**options, text_task_latin=True, text_task_drills=True)
    pool = train_speech_llm.text_pool(latin, ["hi", "en"])
    assert {language for language, _, _ in without} == {"hi"}
    english = [(roman, native) for language, roman, native in pool if language == "en"]
    assert english and all(roman == native for roman, native in english)  # copies, drills included
    sentences = train_speech_llm.text_pool(train_speech_llm.SpeechLLMArguments(**options, text_task_latin=True),
                                           ["hi", "en"])  # fmt: skip
    assert len(english) == 2 * sum(language == "en" for language, _, _ in sentences)  # one drill a sentence
    assert train_speech_llm.noisy_languages(latin, ["hi", "en"]) == {"hi"}
    held = train_speech_llm.SpeechLLMArguments(**options, text_task_noise_held_out_only=True)
    assert train_speech_llm.noisy_languages(held, ["hi", "bn", "en"]) == {"hi"}


def test_the_text_task_misspells_its_roman_texts_when_asked_and_draws_alike_on_resume():
    pool = [("hi", "tasviir mem ek laal naav hai", "तस्वीर में एक लाल नाव है"), ("en", "two red boats", "two red boats")]
    rows = [{"utterance_id": f"u{index}"} for index in range(4)]

    def text_batches(noise: float, epoch: int = 0, noisy_languages=None) -> list[dict]:
        collator = train_speech_llm.SpeechLLMCollator(None, pool, 1.0, 3, None, noise, noisy_languages)
        collator.speech.set_epoch(epoch)
        return [collator([row]) for row in rows]

    clean, noisy = text_batches(0.0), text_batches(0.5)
    assert [b["targets"] for b in noisy] == [b["targets"] for b in clean]  # the native side is never touched
    assert {r for _, r, _ in pool} >= {b["roman_texts"][0] for b in clean}
    assert any(b["roman_texts"] != c["roman_texts"] for b, c in zip(noisy, clean))
    assert text_batches(0.5) == noisy and text_batches(0.5, epoch=1) != noisy  # seeded by epoch and utterance
    batches = text_batches(1.0, 0, {"en"}) + text_batches(1.0, 1, {"en"})
    only_en = [(batch["languages"][0], batch["roman_texts"][0]) for batch in batches]
    assert {roman for language, roman in only_en if language == "hi"} == {pool[0][1]}  # the other language: clean
    assert {roman for language, roman in only_en if language == "en"} - {pool[1][1]}
    alphabet = list("abc")
    for rate, draw in ((0.0, random.Random(0)), (1.0, random.Random(1))):
        written = train_speech_llm.misspell("aa bb cc", rate, alphabet, draw)
        assert written == "aa bb cc" if rate == 0 else written != "aa bb cc"
        assert set(written) <= set("abc ") and "  " not in written and written == written.strip()
    with pytest.raises(ValueError, match="text_task_noise"):
        train_speech_llm.SpeechLLMArguments(corpus="c", romanizer="r", llm="l", text_task_noise=1.5)


def test_ctc_compression_drops_blanks_and_averages_each_run_of_one_label():
    frames = torch.arange(14.0).reshape(2, 7, 1)  # (B 2, T' 7, D 1); blank 0
    labels = torch.tensor([[1, 1, 0, 1, 2, 2, 3], [0, 0, 0, 0, 3, 3, 3]])
    compressed, lengths, pieces = ctc_compress(frames, torch.tensor([6, 4]), labels, blank=0)
    assert lengths.tolist() == [3, 1]  # "a a _ a b b | c" -> a, a, b (past the length: ignored); all blank: one
    assert pieces[0].tolist() == [1, 1, 2] and pieces[1, :1].tolist() == [0]  # each run's label
    torch.testing.assert_close(compressed[0, :, 0], torch.tensor([0.5, 3.0, 4.5]))
    torch.testing.assert_close(compressed[1, :1, 0], torch.tensor([(7 + 8 + 9 + 10) / 4]))  # the mean of its frames


def test_a_ctc_compressed_model_keeps_one_position_per_ctc_label(smoke_corpus, romanizer_dir, text_lm_dir, tmp_path):
    train_speech_llm.main(arguments(smoke_corpus, romanizer_dir, text_lm_dir, tmp_path, "--held_out_languages", "hi",
                                    "--speech_compression", "ctc", "--projector_stride", "1", "--max_steps", "2",
                                    "--eval_steps", "0"))  # fmt: skip
    assert {key.split(".")[0] for key in load_file(tmp_path / "model.safetensors")} == {"encoder", "ctc_head", "projector"}
    model = SpeechLLMForConditionalGeneration.from_pretrained(tmp_path)
    romanizer = FastConformerForCTCTDT.from_pretrained(romanizer_dir).eval()
    torch.testing.assert_close(model.ctc_head.weight, romanizer.ctc_head.weight, rtol=0, atol=0)  # its own, frozen
    audio = [np.random.default_rng(seed).normal(0, 0.1, 8000 * (seed + 1)).astype(np.float32) for seed in range(3)]
    features, mask = model.features(audio)
    with torch.no_grad():
        slots = model.speech_embeddings(features, mask)
        decoded = romanizer.transcribe(features, mask, decoding="ctc")
    assert [len(slot) for slot in slots] == [max(1, len(tokens)) for tokens in decoded.sequences]


def test_a_roman_piece_slot_starts_as_the_romanizers_ctc_transcript_and_round_trips(
        smoke_corpus, romanizer_dir, text_lm_dir, tmp_path):  # fmt: skip
    options = dict(speech_compression="ctc", projector_stride=1, roman_piece_slot=True)
    fresh = SpeechLLMForConditionalGeneration.from_romanizer(romanizer_dir, text_lm_dir, LANGUAGES, **options).eval()
    romanizer = FastConformerForCTCTDT.from_pretrained(romanizer_dir).eval()
    audio = [np.random.default_rng(seed).normal(0, 0.1, 8000 * (seed + 1)).astype(np.float32) for seed in range(3)]
    features, mask = fresh.features(audio)
    with torch.no_grad():
        slots = fresh.speech_embeddings(features, mask)
        decoded = romanizer.transcribe(features, mask, decoding="ctc").sequences
        for slot, pieces in zip(slots, decoded):  # untrained: the slot is the CTC transcript's piece embeddings
            expected = fresh.piece_embeddings(torch.tensor(pieces or [fresh.config.romanizer_blank_token_id]))
            torch.testing.assert_close(slot, expected)
        roman = "yahan ek laal gaadi hai"
        text_slot = fresh.text_embeddings([roman])[0]  # the text task: the same pieces, the same table
        pieces = fresh.romanizer_tokenizer(roman, add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(text_slot, fresh.piece_embeddings(torch.tensor(pieces)))
    word = fresh.romanizer_tokenizer.convert_tokens_to_ids(fresh.romanizer_tokenizer.tokenize(" ek")[0])
    assert fresh.piece_embeddings.weight[word].abs().sum() > 0  # a piece starts as the LLM's embedding of its text
    train_speech_llm.main(arguments(smoke_corpus, romanizer_dir, text_lm_dir, tmp_path, "--held_out_languages", "hi",
                                    "--speech_compression", "ctc", "--projector_stride", "1", "--roman_piece_slot",
                                    "true", "--max_steps", "2", "--eval_steps", "0"))  # fmt: skip
    assert "piece_embeddings.weight" in load_file(tmp_path / "model.safetensors")
    model = SpeechLLMForConditionalGeneration.from_pretrained(tmp_path)
    assert model.romanizer_tokenizer is not None and model.generate(audio=audio[:1], languages=["en"])[0] is not None
    with pytest.raises(Exception, match="roman_piece_slot needs"):  # the config refuses it (a strict dataclass)
        SpeechLLMForConditionalGeneration.from_romanizer(romanizer_dir, text_lm_dir, LANGUAGES, roman_piece_slot=True)


def test_a_roman_token_slot_starts_as_the_ctc_transcript_in_the_llms_tokens_and_round_trips(
        smoke_corpus, romanizer_dir, text_lm_dir, tmp_path):  # fmt: skip
    options = dict(speech_compression="ctc", projector_stride=1, roman_token_slot=True)
    fresh = SpeechLLMForConditionalGeneration.from_romanizer(romanizer_dir, text_lm_dir, LANGUAGES, **options).eval()
    romanizer = FastConformerForCTCTDT.from_pretrained(romanizer_dir).eval()
    pieces_tokenizer, table = fresh.romanizer_tokenizer, fresh.llm.get_input_embeddings()
    audio = [np.random.default_rng(seed).normal(0, 0.1, 8000 * (seed + 1)).astype(np.float32) for seed in range(3)]
    features, mask = fresh.features(audio)
    with torch.no_grad():
        slots = fresh.speech_embeddings(features, mask)
        decoded = romanizer.transcribe(features, mask, decoding="ctc").sequences
        for slot, pieces in zip(slots, decoded):  # untrained: the CTC transcript as the LLM reads a Roman text
            texts = [piece for piece in pieces_tokenizer.convert_ids_to_tokens(pieces) if not piece.startswith("<")]
            ids = fresh.text_ids(" ".join("".join(texts).replace("\u2581", " ").split()))
            torch.testing.assert_close(slot, table(torch.tensor(ids or [fresh.tokenizer.eos_token_id])))
        roman = "yahan ek laal gaadi hai"  # the text task: the LLM's own tokens
        torch.testing.assert_close(fresh.text_embeddings([roman])[0], table(torch.tensor(fresh.text_ids(roman))))
        pieces = torch.tensor(pieces_tokenizer(roman, add_special_tokens=False)["input_ids"])
        frames = torch.eye(len(pieces), fresh.config.llm_hidden_size)  # (N', H): piece i adds the unit vector e_i
        added = fresh.token_slot(pieces, frames) - table(torch.tensor(fresh.text_ids(roman)))  # (n, H)
        groups = [torch.nonzero(row[: len(pieces)]).squeeze(1).tolist() for row in added]
        token_texts = [fresh.tokenizer.decode([token]) for token in fresh.text_ids(roman)]
        piece_texts = [piece.replace("\u2581", " ") for piece in pieces_tokenizer.convert_ids_to_tokens(pieces.tolist())]
        assert "".join(token_texts) == "".join(piece_texts) == f" {roman}"  # both spell the text, a space in front
        firsts = [len("".join(piece_texts[:i])) + len(text) - len(text.lstrip()) for i, text in enumerate(piece_texts)]
        bounds = np.cumsum([0] + [len(text) for text in token_texts])
        assert groups == [[i for i, first in enumerate(firsts) if begin <= first < end]
                          for begin, end in zip(bounds[:-1], bounds[1:])]  # the token holding its first character
        for row, group in zip(added, groups):  # a token adds the mean of the frames of the pieces that start in it
            torch.testing.assert_close(row[group], torch.full((len(group),), 1 / max(1, len(group))))
        assert len(groups) == len(fresh.text_ids(roman)) and sum(map(bool, groups)) >= len(roman.split())
    train_speech_llm.main(arguments(smoke_corpus, romanizer_dir, text_lm_dir, tmp_path, "--held_out_languages", "hi",
                                    "--speech_compression", "ctc", "--projector_stride", "1", "--roman_token_slot",
                                    "true", "--max_steps", "2", "--eval_steps", "0"))  # fmt: skip
    model = SpeechLLMForConditionalGeneration.from_pretrained(tmp_path)
    assert model.config.roman_token_slot and model.romanizer_tokenizer is not None
    assert model.generate(audio=audio[:1], languages=["en"])[0] is not None
    with pytest.raises(Exception, match="two forms of the slot"):
        SpeechLLMForConditionalGeneration.from_romanizer(romanizer_dir, text_lm_dir, LANGUAGES, roman_piece_slot=True,
                                                         **options)  # fmt: skip


def test_include_llm_copies_the_base_llm_into_the_folder(unified_run, tmp_path):
    output_dir, _ = unified_run
    model = SpeechLLMForConditionalGeneration.from_pretrained(output_dir)
    model.save_pretrained(tmp_path / "with-llm", include_llm=True)
    assert json.loads((tmp_path / "with-llm" / "config.json").read_text())["llm_name_or_path"] == "llm"
    reloaded = SpeechLLMForConditionalGeneration.from_pretrained(tmp_path / "with-llm")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_sigkill_mid_run_then_resume_ends_with_the_same_weights(smoke_corpus, romanizer_dir, text_lm_dir, tmp_path,
                                                                kill_at_checkpoint):
    script = [sys.executable, str(REPO / "training" / "train_speech_llm.py")]
    steps = ["--max_steps", "8", "--save_steps", "3", "--held_out_languages", "hi", "--text_task_probability", "0.5"]
    command = lambda folder, *extra: [*script, *arguments(smoke_corpus, romanizer_dir, text_lm_dir, folder, *steps,  # noqa: E731
                                                          *extra)]  # fmt: skip
    subprocess.run(command(tmp_path / "straight"), cwd=REPO, check=True, capture_output=True)
    interrupted = tmp_path / "interrupted"
    kill_at_checkpoint(command(interrupted), interrupted, step=3)
    resumed = subprocess.run(command(interrupted, "--resume", "true"), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-2000:]
    for part in ("model.safetensors", "adapter/adapter_model.safetensors"):
        straight, again = load_file(tmp_path / "straight" / part), load_file(interrupted / part)
        assert straight.keys() == again.keys()
        for name in straight:
            torch.testing.assert_close(again[name], straight[name], rtol=0, atol=0, msg=f"{part}: {name}")


def test_bad_inputs_fail_before_training(smoke_corpus, romanizer_dir, text_lm_dir, trained_asr_dir, tmp_path):
    run = lambda *flags, romanizer=romanizer_dir, llm=text_lm_dir: train_speech_llm.main(  # noqa: E731
        arguments(smoke_corpus, romanizer, llm, tmp_path / "out", *flags))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot be loaded as a causal LM"):
        run(llm=tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a roman-target stage-3 model"):
        run(romanizer=trained_asr_dir[0])
    with pytest.raises(ValueError, match=r"language\(s\) \['ta'\] are not in"):
        run("--held_out_languages", "ta")
    with pytest.raises(ValueError, match="--lora_rank 0 trains the projector alone"):
        run("--lora_rank", "0", "--text_task_probability", "0.3")
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_tokenizer_without_the_target_script_is_refused_with_counts():
    english_only = train_tokenizer_for_lm(["i can see one orange triangle on the left"] * 4, vocab_size=300)
    with pytest.raises(ValueError, match=r"0 of \d+ target characters map to the unknown token .* \d+ only to byte"):
        train_speech_llm.check_tokenizer(english_only, ["दाईं ओर दो बैंगनी घर हैं"], 0.5, "english-lm")
    counts = train_speech_llm.check_tokenizer(english_only, ["one triangle"], 0.5, "english-lm")
    assert counts == {"target_characters": 9, "unknown_characters": 0, "byte_split_characters": 0}


def test_the_prompt_goes_through_the_chat_template_where_the_tokenizer_has_one(unified_run):
    model = SpeechLLMForConditionalGeneration.from_pretrained(unified_run[0])
    before, after = model.prompt_pieces("hi")  # no template: the LM cascade's prompt, the speech for the Roman text
    slot, target = model.text_ids("do laal gole"), model.text_ids("दो लाल गोले")
    cascade = deromanization_prompt("do laal gole", "hi") + " दो लाल गोले"
    assert before + slot + after + target == model.tokenizer(cascade)["input_ids"]
    model.tokenizer.chat_template = ("{% for m in messages %}[user] {{ m['content'] }} [end]{% endfor %}"
                                     "{% if add_generation_prompt %}[assistant]{% endif %}")  # fmt: skip
    before, after = model.prompt_pieces("hi")
    assert model.tokenizer.decode(before) == "[user] Write this romanized Hindi sentence in Devanagari script.\n"
    assert model.tokenizer.decode(after) == " [end][assistant]"
