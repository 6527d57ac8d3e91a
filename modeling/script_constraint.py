"""Script-constrained decoding: a causal LM that may only write the given script.

The language of a zero-shot prompt is given (Zero-AVSR names it in the instruction), but a small LM may ignore the
name and write a seen language's script instead. `ScriptConstraint` masks, at every step, the tokens that would put
a character outside the row's script into the output, so that only the words, not the script, are left to the LM.

What a row may write: the letters, marks and signs of its script (by Unicode character name: "BENGALI ...",
"DEVANAGARI ..."), the Devanagari danda (shared by most Indic scripts), the zero-width (non-)joiners, the digits,
whitespace and punctuation of Latin-1 and General Punctuation, and EOS. Byte-level tokenizers spell rare characters
in byte pieces; the mask follows the UTF-8 bytes a row has left incomplete, so that a byte piece is allowed only
where it can still end in an allowed character. (Cached per tokenizer, script and incomplete tail: a handful of masks.)

    processor = ScriptConstraint(tokenizer, ["Bengali", "Tamil"], prompt_length=0)
    llm.generate(..., logits_processor=LogitsProcessorList([processor]))
"""

import json
import re
import unicodedata
import weakref
from functools import cache

import torch
from transformers import LogitsProcessor
from transformers.convert_slow_tokenizer import bytes_to_unicode

SHARED_CHARACTERS = "\u0964\u0965\u200c\u200d"  # danda, double danda, zero-width non-joiner, zero-width joiner


@cache
def script_characters(script: str) -> frozenset[str]:
    """The characters a row in `script` may write: the script's own, plus digits, whitespace and punctuation."""
    prefix = f"{script.upper()} "
    characters = set(SHARED_CHARACTERS)
    for code in range(0x20, 0x3000):
        character = chr(code)
        category = unicodedata.category(character)
        common = code < 0x100 or 0x2000 <= code < 0x2070  # Latin-1 and General Punctuation: no other script's
        name = unicodedata.name(character, "")
        if name.startswith(prefix) or common and (category[0] in "PZN" or character.isspace()):
            characters.add(character)
    return frozenset(characters | {"\n", "\t"})


@cache
def utf8_prefixes(script: str) -> frozenset[bytes]:
    """Every proper prefix of the UTF-8 encoding of the script's characters (the incomplete tails it allows)."""
    return frozenset(encoded[:end] for encoded in map(str.encode, script_characters(script))
                     for end in range(1, len(encoded)))  # fmt: skip


_VOCABULARIES = weakref.WeakKeyDictionary()  # tokenizer -> (its token bytes, {(script, tail, V): mask}), reused by
# every generate call: a 150k-token vocabulary takes ~1 s to read


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each token id writes; None for special tokens. Byte-level BPE (GPT-2, Llama-3, Qwen) through its
    byte alphabet; SentencePiece through "▁" and "<0xNN>" byte-fallback pieces."""
    if tokenizer not in _VOCABULARIES:
        _VOCABULARIES[tokenizer] = (read_token_bytes(tokenizer), {})
    return _VOCABULARIES[tokenizer][0]


def read_token_bytes(tokenizer) -> list[bytes | None]:
    decoder = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
    byte_level = "ByteLevel" in json.dumps(decoder)
    alphabet = {character: byte for byte, character in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids)
    result = []
    for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token_id in special or token is None:
            result.append(None)
        elif byte_level:
            result.append(bytes(alphabet[character] for character in token) if set(token) <= alphabet.keys()
                          else token.encode())  # fmt: skip  (added tokens are plain text)
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
            result.append(bytes([int(token[3:5], 16)]))
        else:
            result.append(token.replace("\u2581", " ").encode())
    return result


def incomplete_tail(data: bytes) -> bytes:
    """The trailing bytes of `data` that do not yet form a whole UTF-8 character (b"" when none)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead (or ASCII) byte
            length = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return data[-back:] if back < length else b""
    return b""


def writes_only(data: bytes, script: str) -> bool:
    """Whether `data`, which may end in an incomplete character, writes only characters `script` allows."""
    tail = incomplete_tail(data)
    try:
        text = data[: len(data) - len(tail)].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return set(text) <= script_characters(script) and (not tail or tail in utf8_prefixes(script))


class ScriptConstraint(LogitsProcessor):
    """Row b of the batch (with `num_beams` rows per prompt) may only write `scripts[b // num_beams]`. input_ids
    hold `prompt_length` prompt tokens before the generated ones (0 where the prompt went in as embeddings)."""

    def __init__(self, tokenizer, scripts: list[str], prompt_length: int, num_beams: int = 1):
        self.tokens = token_bytes(tokenizer)
        self.masks: dict[tuple[str, bytes, int], torch.Tensor] = _VOCABULARIES[tokenizer][1]
        self.scripts, self.prompt_length, self.num_beams = list(scripts), prompt_length, num_beams
        self.eos_id = tokenizer.eos_token_id

    def allowed(self, script: str, tail: bytes, vocabulary: int) -> torch.Tensor:
        """(V,) bool: the tokens a row in `script` may write after the incomplete bytes `tail`."""
        key = (script, tail, vocabulary)
        if key not in self.masks:
            mask = torch.zeros(vocabulary, dtype=torch.bool)
            for token_id, data in enumerate(self.tokens[:vocabulary]):
                mask[token_id] = data is not None and bool(data) and writes_only(tail + data, script)
            if self.eos_id is not None and not tail:
                mask[self.eos_id] = True
            self.masks[key] = mask
        return self.masks[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        masks = []
        for row, generated in enumerate(input_ids[:, self.prompt_length :].tolist()):
            written = b"".join(self.tokens[token] or b"" for token in generated[-8:])  # >= the last character
            masks.append(self.allowed(self.scripts[row // self.num_beams], incomplete_tail(written), scores.shape[-1]))
        return scores.masked_fill(~torch.stack(masks).to(scores.device), -float("inf"))


__all__ = ["ScriptConstraint", "script_characters", "token_bytes", "writes_only"]
