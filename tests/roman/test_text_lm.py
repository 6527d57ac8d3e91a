"""The small text-only causal LM (`avalign.training.text_lm`): byte-level tokenizer, training, a stock folder."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from avalign.training.corpus.lexicons import LEXICONS
from avalign.training.corpus.scenes import sample_scene
from avalign.training.precision import choose_precision
from avalign.training.roman.deromanize import one_thread
from avalign.training.text_lm import TextLMConfig, character_coverage, train_text_lm, train_tokenizer_for_lm

TINY_LM = TextLMConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=300,
                       max_length=64)  # fmt: skip
PROMPT_PAIRS = [("dain or", "दाईं ओर"), ("baain or", "बाईं ओर"), ("do laal gole", "दो लाल गोले"),
                ("teen neele ghar", "तीन नीले घर")]  # fmt: skip


def sentences(language: str, count: int, seed: int = 0) -> list[str]:
    """Distinct sentences of the embedded corpus (no audio)."""
    lexicon, rng = LEXICONS[language], np.random.default_rng(seed)
    template_ids = list(lexicon.templates)
    found = {lexicon.sentence(str(rng.choice(template_ids)), sample_scene(rng)) for _ in range(4 * count)}
    return sorted(found)[:count]


def tiny_corpus() -> list[str]:
    """~40 short texts in four languages and the "Roman: ...\\nHindi: ..." prompt format, one duplicate, one blank."""
    texts = [text for language in ("hi", "bn", "ta", "en") for text in sentences(language, 9)]
    texts += [f"Roman: {roman}\nHindi: {native}" for roman, native in PROMPT_PAIRS]
    return [*texts, texts[0], "  "]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The models here are tiny: one intra-op thread is faster, and on a busy machine two threads' spin-waits made
    a training step of the tiny LM ~60x slower (0.9 s against 0.015 s)."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder, metrics) of a tiny LM trained for 60 steps on `tiny_corpus`."""
    folder = tmp_path_factory.mktemp("text-lm")
    return folder, train_text_lm(tiny_corpus(), folder, steps=60, config=TINY_LM, batch_size=8, held_out_fraction=0.1)


def test_tokenizer_round_trips_and_covers_its_characters():
    texts = [text for language in ("hi", "bn", "ta", "en") for text in sentences(language, 5)]
    texts += ["Roman: dain or\nHindi: दाईं ओर", "  two  spaces, then a tab\tand a trailing space "]
    tokenizer = train_tokenizer_for_lm(texts, vocab_size=400)
    assert len(tokenizer) <= 400 and tokenizer.unk_token_id is None
    for text in texts:
        ids = tokenizer.encode(text)
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    unseen = "ਗ中"  # Gurmukhi, CJK: in no training text, so only their bytes are tokens
    assert tokenizer.decode(tokenizer.encode(unseen, add_special_tokens=False)) == unseen
    seen = {char for text in texts for char in text if not char.isspace()}
    coverage = character_coverage(tokenizer, [*texts, unseen])
    assert coverage["characters"] == len(seen) + 2
    assert coverage["unknown"] == []
    assert set(unseen) <= set(coverage["byte_split"]) and coverage["byte_split"] == sorted(coverage["byte_split"])
    assert "a" not in coverage["byte_split"]  # single bytes are tokens


def test_trained_folder_is_a_stock_causal_lm(trained):
    folder, metrics = trained
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert isinstance(model.config, LlamaConfig) and model.config.tie_word_embeddings
    assert model.config.vocab_size == len(tokenizer) == metrics["vocab_size"] <= TINY_LM.vocab_size
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
    )
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    assert metrics == json.loads((folder / "metrics.json").read_text("utf-8"))
    assert metrics["counts"] == {"input": 42, "empty": 1, "duplicates": 1, "train": 36, "held_out": 4}
    assert metrics["steps"] == 60 and metrics["parameters"] == sum(p.numel() for p in model.parameters())
    assert math.isclose(metrics["held_out_perplexity"], math.exp(metrics["held_out_loss"]))
    # an untrained model is at about log(vocabulary size): 5.7 here
    assert metrics["train_loss"] < math.log(len(tokenizer)) - 1.0, metrics  # 4.1 after 60 steps
    assert metrics["held_out_loss"] < math.log(len(tokenizer)) - 1.0, metrics

    tokenizer.padding_side = "left"
    inputs = tokenizer(["Roman: dain or\nHindi:", "दो"], return_tensors="pt", padding=True)
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)  # (2, prompt + <= 5)
    assert inputs["input_ids"].shape[1] < generated.shape[1] <= inputs["input_ids"].shape[1] + 5
    assert all(isinstance(text, str) for text in tokenizer.batch_decode(generated, skip_special_tokens=True))


def test_folder_loads_without_avalign(trained, run_without_avalign):
    script = """
        import sys
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model, tokenizer = AutoModelForCausalLM.from_pretrained(sys.argv[1]), AutoTokenizer.from_pretrained(sys.argv[1])
        ids = model.generate(**tokenizer("Roman: dain or", return_tensors="pt"), max_new_tokens=3, do_sample=False)
        print(type(model).__name__, ids.shape[1] <= len(tokenizer("Roman: dain or")["input_ids"]) + 3)
    """
    assert run_without_avalign(script, trained[0]).split() == ["LlamaForCausalLM", "True"]


def test_same_seed_same_weights(trained, tmp_path):
    folder, metrics = trained
    again = train_text_lm(tiny_corpus(), tmp_path, steps=60, config=TINY_LM, batch_size=8, held_out_fraction=0.1)
    assert again["held_out_loss"] == metrics["held_out_loss"]
    first, second = (AutoModelForCausalLM.from_pretrained(path).model.layers[-1].mlp.down_proj.weight
                     for path in (folder, tmp_path))  # fmt: skip
    assert torch.equal(first, second)


def test_bad_input_raises(tmp_path):
    with pytest.raises(ValueError, match="empty after cleaning"):
        train_text_lm(["", "  ", "\n"], tmp_path, steps=1, config=TINY_LM)
    with pytest.raises(ValueError, match="need >= 2"):
        train_text_lm(["one text", "one text "], tmp_path, steps=1, config=TINY_LM)
    with pytest.raises(ValueError, match="steps"):
        train_text_lm(["one text", "another"], tmp_path, steps=0, config=TINY_LM)
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer_for_lm(["a b"], vocab_size=100)


def test_it_trains_at_the_precision_asked_for(trained, tmp_path):
    _, metrics = trained
    assert metrics["precision"]["requested"] == "auto"
    assert metrics["precision"]["precision"] == choose_precision("auto", "cpu").precision
    bf16 = train_text_lm(tiny_corpus(), tmp_path, steps=3, config=TINY_LM, batch_size=8, mixed_precision="bf16")
    assert bf16["precision"]["precision"] == "bf16" and math.isfinite(bf16["held_out_loss"])
    with pytest.raises(ValueError, match="fp16"):
        train_text_lm(tiny_corpus(), tmp_path, steps=1, config=TINY_LM, mixed_precision="fp16")
