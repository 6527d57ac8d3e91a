"""Romanized targets (uroman + cache) and the two de-romanizers (character seq2seq, prompted causal LM)."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from avalign.modeling.script_constraint import script_characters
from avalign.training.roman.deromanize import (
    CausalLMDeromanizer,
    CharTransliterator,
    TransliteratorConfig,
    load_deromanizer,
    one_thread,
    reading_drills,
    records,
    split_held_out,
    train_transliterator,
    unique_sentences,
    word_pairs,
)
from avalign.training.corpus.lexicons import LEXICONS
from avalign.training.corpus.scenes import sample_scene
from avalign.training.evaluation.metrics import score
from avalign.training.roman.romanize import RomanizationCache, load_uroman, romanize, romanize_dataset
from avalign.training.schema import LANGUAGE_NAMES, LANGUAGES

TINY_TRANSLITERATOR = TransliteratorConfig(hidden_size=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                                           feedforward_size=64, dropout=0.0)  # fmt: skip


def corpus_sentences(language: str, count: int, seed: int = 0) -> list[str]:
    """Distinct in-domain sentences of the embedded corpus (no audio synthesis)."""
    lexicon, rng = LEXICONS[language], np.random.default_rng(seed)
    template_ids = list(lexicon.templates)
    sentences = {lexicon.sentence(str(rng.choice(template_ids)), sample_scene(rng)) for _ in range(4 * count)}
    return sorted(sentences)[:count]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The models here are tiny: one intra-op thread is faster, and much faster on a busy machine."""
    with one_thread():
        yield


@pytest.fixture
def uroman_calls(monkeypatch) -> list:
    """The texts the process-wide uroman instance is asked to romanize, recorded as they come."""
    instance, calls = load_uroman(), []
    original = instance.romanize_string

    def counting(text, *args, **kwargs):
        calls.append(text)
        return original(text, *args, **kwargs)

    monkeypatch.setattr(instance, "romanize_string", counting)
    return calls


# ----------------------------------------------------------------------------- romanization


def test_every_language_romanizes_to_lowercase_latin():
    texts = [corpus_sentences(language, 1)[0] for language in LANGUAGES]
    for language, text, roman in zip(LANGUAGES, texts, romanize(texts, list(LANGUAGES))):
        letters = [char for char in roman if not char.isspace()]
        ascii_letters = sum(char.isascii() and char.isalpha() for char in letters)
        assert ascii_letters >= 0.95 * len(letters) > 0, (language, text, roman)
        assert roman == " ".join(roman.lower().split())
        assert len(roman.split()) == len(text.split()), (language, text, roman)  # uroman keeps word boundaries
        if language == "en":
            assert roman == text.lower()
        else:
            assert not any(char.isascii() for char in text.replace(" ", "")) and roman != text


def test_cache_persists_and_skips_uroman(tmp_path, uroman_calls):
    texts = ["दो लाल गोले", "", "दो लाल गोले", "तीन नीले घर", "  "]
    languages = ["hi"] * len(texts)
    cache = RomanizationCache(tmp_path / "roman.json")
    first = romanize(texts, languages, cache)
    assert len(uroman_calls) == 2 and (cache.misses, cache.hits) == (2, 3)  # blanks and repeats cost no call
    assert first[1] == first[4] == "" and first[0] == first[2] != first[3]

    reloaded = RomanizationCache(tmp_path / "roman.json")
    assert len(reloaded) == 2
    assert romanize(texts, languages, reloaded) == first
    assert len(uroman_calls) == 2 and reloaded.misses == 0
    assert json.loads((tmp_path / "roman.json").read_text("utf-8"))["hi"]["तीन नीले घर"] == first[3]


def test_caches_saving_to_one_file_at_once_never_rename_each_others_file(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    caches = [RomanizationCache(tmp_path / "roman.json") for _ in range(4)]  # as --jobs workers hold theirs
    for index, cache in enumerate(caches):
        cache.entries = {"hi": {f"text {index}": f"roman {index}"}}

    def save_often(cache):
        for _ in range(50):
            cache.save()

    with ThreadPoolExecutor(len(caches)) as pool:
        list(pool.map(save_often, caches))  # with one shared temporary name, a rename finds it gone
    assert json.loads((tmp_path / "roman.json").read_text("utf-8")) in [cache.entries for cache in caches]
    assert [path.name for path in tmp_path.iterdir()] == ["roman.json"]  # no temporary file left


def test_romanize_rejects_bad_input(uroman_calls):
    with pytest.raises(ValueError, match=r"text 1 .*'xx'"):
        romanize(["दो", "two"], ["hi", "xx"])
    with pytest.raises(ValueError, match="2 texts but 1 languages"):
        romanize(["दो", "दो"], ["hi"])
    assert uroman_calls == []  # nothing is romanized before the input is checked


def test_romanize_dataset_adds_roman_columns(tmp_path):
    hindi = corpus_sentences("hi", 3)
    corpus = DatasetDict({
        "unlabeled": Dataset.from_dict({"language": ["hi", "en"], "transcript": ["", ""],
                                        "reference_transcript": [hindi[0], "two red circles"]}),
        "train": Dataset.from_dict({"language": ["hi", "hi"], "transcript": hindi[1:],
                                    "reference_transcript": hindi[1:]}),
    })  # fmt: skip
    romanized = romanize_dataset(corpus, tmp_path / "roman.json")
    assert romanized["unlabeled"]["transcript_roman"] == ["", ""]
    assert romanized["unlabeled"]["reference_transcript_roman"] == romanize([hindi[0], "two red circles"], ["hi", "en"])
    assert romanized["train"]["transcript_roman"] == romanized["train"]["reference_transcript_roman"]
    assert romanized["train"]["transcript_roman"] == romanize(hindi[1:], ["hi", "hi"])
    assert len(RomanizationCache(tmp_path / "roman.json")) == 4

    without_reference = romanize_dataset(corpus["train"].remove_columns("reference_transcript"), None)
    assert "reference_transcript_roman" not in without_reference.column_names
    with pytest.raises(ValueError, match="'language' and 'transcript'"):
        romanize_dataset(corpus["train"].remove_columns("transcript"), None)


# ----------------------------------------------------------------------------- character transliterator


@pytest.fixture(scope="module")
def transliterator_run(tmp_path_factory) -> tuple:
    """A tiny transliterator trained on Hindi and Tamil corpus sentences: (pairs, folder, metrics)."""
    languages = [language for language in ("hi", "ta") for _ in range(60)]
    natives = corpus_sentences("hi", 60) + corpus_sentences("ta", 60)
    pairs = list(zip(languages, romanize(natives, languages), natives))
    pairs += [("hi", "", ""), ("en", "two red stars", "two red stars")]  # skipped and counted
    folder = tmp_path_factory.mktemp("transliterator")
    metrics = train_transliterator(pairs, folder, steps=200, seed=0, config=TINY_TRANSLITERATOR, batch_size=32,
                                   learning_rate=1e-2)  # fmt: skip
    return pairs, folder, metrics


def test_transliterator_beats_copying_the_input(transliterator_run):
    _, folder, metrics = transliterator_run
    assert metrics["counts"]["skipped_empty"] == metrics["counts"]["skipped_latin_script"] == 1
    assert metrics["counts"]["held_out"] == 12  # 10 % of 60 sentences, per language
    assert set(metrics["held_out"]["per_language"]) == {"hi", "ta"}
    assert metrics["held_out"]["overall"]["cer"] < 0.2 * metrics["copy_baseline"]["overall"]["cer"]
    assert json.loads((folder / "metrics.json").read_text("utf-8")) == metrics


def test_transliterator_save_load_round_trip(transliterator_run, tmp_path):
    pairs, folder, metrics = transliterator_run
    loaded = CharTransliterator.load(folder)
    assert set(loaded.languages) == {"hi", "ta"}
    languages, romans, _ = zip(*pairs[:-2])
    outputs = loaded.deromanize(romans, languages)
    loaded.save(tmp_path)
    assert CharTransliterator.load(tmp_path).deromanize(romans, languages) == outputs
    assert load_deromanizer(f"char:{folder}").deromanize(romans[:5], languages[:5]) == outputs[:5]
    loaded.batch_size = 1  # padding in a batch does not change a word's output
    assert loaded.deromanize(romans[:8], languages[:8]) == outputs[:8]
    # the saved model is the one that was scored: it gives the same held-out scores
    held_out = split_held_out(unique_sentences(pairs)[0], held_out_fraction=0.1, seed=0)[1]
    hypotheses = loaded.deromanize([roman for _, roman, _ in held_out], [language for language, _, _ in held_out])
    assert score(records(held_out, hypotheses)) == metrics["held_out"]


def test_transliterator_is_deterministic_with_a_seed(transliterator_run, tmp_path):
    pairs = transliterator_run[0][:6] + transliterator_run[0][60:66]  # few held-out sentences to score
    for run in ("a", "b", "c"):
        train_transliterator(pairs, tmp_path / run, steps=3, seed=0 if run != "c" else 1, config=TINY_TRANSLITERATOR)
    weights = {run: CharTransliterator.load(tmp_path / run).model.state_dict() for run in ("a", "b", "c")}
    assert all(torch.equal(weights["a"][name], weights["b"][name]) for name in weights["a"])
    assert not all(torch.equal(weights["a"][name], weights["c"][name]) for name in weights["a"])


def test_transliterator_input_handling(transliterator_run):
    transliterator = CharTransliterator.load(transliterator_run[1])
    assert transliterator.deromanize(["", "   ", " Two  RED "], ["hi", "ta", "en"]) == ["", "", "two red"]
    assert transliterator.deromanize([" DO  LAAL"], ["hi"]) == transliterator.deromanize(["do laal"], ["hi"])
    with pytest.raises(ValueError, match="2 texts but 1 languages"):
        transliterator.deromanize(["do", "laal"], ["hi"])
    with pytest.raises(ValueError, match=r"text 1: CharTransliterator cannot write 'bn'"):
        transliterator.deromanize(["do", "dui"], ["hi", "bn"])
    with pytest.raises(ValueError, match="expected 'char:<folder>' or 'lm:<model id or path>'"):
        load_deromanizer(str(transliterator_run[1]))
    with pytest.raises(FileNotFoundError, match="not a CharTransliterator folder"):
        load_deromanizer(f"char:{transliterator_run[1] / 'missing'}")


def test_reading_drills_are_random_words_of_each_sentences_language():
    sentences = [("hi", "do laal phuul", "दो लाल फूल"), ("hi", "ek kaalii kaar hai", "एक काली कार है"),
                 ("ta", "oru maram", "ஒரு மரம்"), ("ta", "oru  maram ullatu", "ஒரு மரம்")]  # fmt: skip
    pairs = word_pairs(sentences)  # the last sentence's words do not line up: none of its pairs
    assert pairs[:3] == [("hi", "do", "दो"), ("hi", "laal", "लाल"), ("hi", "phuul", "फूल")]
    assert len(pairs) == 9 and ("ta", "ullatu", "மரம்") not in pairs
    drills = reading_drills(sentences * 10, seed=0)
    assert [(language, len(roman.split())) for language, roman, _ in drills] == [
        (language, len(roman.split())) for language, roman, _ in sentences * 10]
    for language, roman, native in drills:
        assert all((language, *words) in pairs for words in zip(roman.split(), native.split()))
    assert len({roman for _, roman, _ in drills}) > len(sentences)  # new word orders, not the sentences again
    assert reading_drills(sentences * 10, seed=0) == drills != reading_drills(sentences * 10, seed=1)


# ----------------------------------------------------------------------------- causal LM


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A randomly initialised 2-layer GPT-2 with a byte-level BPE tokenizer, saved like a Hub model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator(["Write this romanized Hindi sentence in Devanagari script.", "Roman: do\nHindi:"],
                                  trainer)  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer.save_pretrained(folder)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_prompt_names_language_and_script_with_few_shot_examples(tiny_lm):
    examples = [("hi", "do laal gole", "दो लाल गोले"), ("ta", "irandu", "இரண்டு")]
    deromanizer = CausalLMDeromanizer(tiny_lm, examples=examples)
    prompt = deromanizer.prompt("ek gola", "hi")
    assert prompt.startswith(f"Write this romanized {LANGUAGE_NAMES['hi']} sentence in Devanagari script.")
    assert "Roman: do laal gole\nHindi: दो लाल गोले\n" in prompt and "இரண்டு" not in prompt
    assert prompt.endswith("Roman: ek gola\nHindi:")


def test_causal_lm_deromanizer_is_batched(tiny_lm):
    texts, languages = ["ek gola", "", "do laal gole", "teen"], ["hi", "hi", "mr", "ta"]
    deromanizer = CausalLMDeromanizer(tiny_lm, batch_size=2, max_new_tokens_per_character=1.0)
    batched = deromanizer.deromanize(texts + ["Two  RED"], languages + ["en"])
    assert batched[1] == "" and batched[4] == "two red" and all("\n" not in output for output in batched)
    batched = batched[:4]
    deromanizer.batch_size = 1
    assert deromanizer.deromanize(texts, languages) == batched  # left padding and per-row budgets
    with pytest.raises(ValueError, match="text 0: CausalLMDeromanizer cannot write 'xx'"):
        deromanizer.deromanize(["ek"], ["xx"])


def rig_lm(deromanizer: CausalLMDeromanizer, script: str) -> list:
    """Makes the LM write `script` one character (token) per step, its last character forever after; returns the
    list that records one entry per forward pass."""
    token_ids = [deromanizer.tokenizer(char, add_special_tokens=False)["input_ids"][0] for char in script]
    steps = []

    def favour_next(module, inputs, logits):  # logits (B, T, V)
        steps.append(len(steps))
        favoured = token_ids[min(len(steps) - 1, len(token_ids) - 1)]
        return logits + 1e4 * torch.nn.functional.one_hot(torch.tensor(favoured), logits.shape[-1])

    deromanizer.model.lm_head.register_forward_hook(favour_next)
    return steps


def test_causal_lm_deromanizer_stops_at_the_first_newline(tiny_lm):
    deromanizer = load_deromanizer(f"lm:{tiny_lm}")
    steps = rig_lm(deromanizer, "a\nb")
    assert deromanizer.deromanize(["do laal gole", "ek"], ["hi", "hi"]) == ["a", "a"]
    assert len(steps) == 2  # one batch, two generated tokens: the stop string ended it


def test_causal_lm_deromanizer_bounds_each_row(tiny_lm):
    deromanizer = load_deromanizer(f"lm:{tiny_lm}")
    deromanizer.max_new_tokens_per_character = 1.0
    steps = rig_lm(deromanizer, "b")  # never a newline
    texts = ["ek", "do laal"]
    assert deromanizer.deromanize(texts, ["hi", "hi"]) == ["b" * deromanizer.max_new_tokens(text) for text in texts]
    assert len(steps) == deromanizer.max_new_tokens(texts[1])


def test_causal_lm_deromanizer_held_to_the_script_writes_no_other(tiny_lm):
    deromanizer = load_deromanizer(f"lm:{tiny_lm}")
    rig_lm(deromanizer, "b")  # Latin, forever
    assert deromanizer.deromanize(["do laal"], ["hi"])[0].startswith("bb")
    held = load_deromanizer(f"lm:{tiny_lm}", constrain_to_script=True)
    rig_lm(held, "b")
    text = held.deromanize(["do laal"], ["hi"])[0].removesuffix("\ufffd")  # the budget may end mid-character
    assert text and set(text) <= script_characters("Devanagari"), text
