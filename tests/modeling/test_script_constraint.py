"""Script-constrained decoding (`ScriptConstraint`): a random tiny LM, held to each row's script, writes only that
script, also where a byte-level tokenizer spells it in byte pieces; free, the same LM does not."""

import unicodedata

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList, PreTrainedTokenizerFast

from avalign.modeling.script_constraint import ScriptConstraint, script_characters, token_bytes, writes_only
from avalign.training.text_lm import train_tokenizer_for_lm

TEXTS = ["এখানে ডান দিকে দুটি বাদামি গাড়ি আছে", "यहाँ बाईं ओर एक बैंगनी नाव है", "இங்கே கீழே ஒரு நீல கார் உள்ளது",
         "here is a red car"] * 10  # fmt: skip


def random_lm(vocabulary: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocabulary, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=2)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def generate(tokenizer, scripts, constrained: bool, new_tokens: int = 24) -> list[str]:
    """Greedy continuations of one BOS per row, at temperature-free random weights."""
    model = random_lm(len(tokenizer))
    prompt = torch.full((len(scripts), 1), tokenizer.bos_token_id)
    processors = [ScriptConstraint(tokenizer, scripts, prompt_length=1)] if constrained else []
    output = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=new_tokens,
                            min_new_tokens=new_tokens, logits_processor=LogitsProcessorList(processors),
                            pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return tokenizer.batch_decode(output[:, 1:], skip_special_tokens=True)


def outside(text: str, script: str) -> set[str]:
    return set(text) - script_characters(script)


@pytest.mark.parametrize("vocabulary", [400, 259], ids=["merges", "bytes-only"])
def test_each_row_writes_only_its_script(vocabulary):
    tokenizer = train_tokenizer_for_lm(TEXTS, vocabulary)
    scripts = ["Bengali", "Tamil", "Devanagari", "Latin"]
    for text, script in zip(generate(tokenizer, scripts, constrained=True), scripts):
        text = text.removesuffix("\ufffd")  # the token budget may end mid-character; nowhere else is one cut
        assert text.strip() and not outside(text, script), (script, text)
    free = generate(tokenizer, scripts, constrained=False)
    assert any(outside(text, script) for text, script in zip(free, scripts))  # the constraint is what holds them


def test_script_characters_follow_unicode_names():
    bengali = script_characters("Bengali")
    assert {"এ", "া", "্", "।", " ", ",", "7"} <= bengali
    assert not {"य", "இ", "a"} & bengali
    assert all(unicodedata.name(c).startswith("LATIN") for c in script_characters("Latin") if c.isalpha())


def test_an_incomplete_character_is_allowed_only_as_a_prefix_of_the_script():
    assert writes_only("এখা".encode(), "Bengali")
    assert writes_only("এখ".encode() + "া".encode()[:2], "Bengali")  # ends mid-character, on a Bengali prefix
    assert not writes_only("এ".encode() + "य".encode()[:2], "Bengali")  # a Devanagari prefix
    assert not writes_only("य".encode()[1:], "Devanagari")  # starts mid-character


def test_sentencepiece_byte_fallback_pieces_are_read_as_bytes():
    pieces = ["<unk>", "<s>", "</s>", "\u2581এখানে", "<0xE0>", "<0xA6>", "<0x8F>"]
    backend = Tokenizer(models.BPE(vocab={piece: i for i, piece in enumerate(pieces)}, merges=[], byte_fallback=True,
                                   unk_token="<unk>"))  # fmt: skip
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    assert token_bytes(tokenizer) == [None, None, None, " এখানে".encode(), b"\xe0", b"\xa6", b"\x8f"]
    assert b"".join(token_bytes(tokenizer)[4:]).decode() == "এ"
