"""Multilingual subword tokenizer for native-script transcripts, served as a stock `ParakeetTokenizer`.

The tokenizer is a SentencePiece-style BPE built with the `tokenizers` library:

- normalisation: Unicode NFC, every run of whitespace becomes one space, leading/trailing spaces dropped;
- pre-tokenisation: Metaspace, a space becomes "▁" and every transcript starts with "▁";
- model: BPE trained on the transcripts (deterministic: same texts and size -> same vocabulary and ids).

Byte-fallback policy: the learned alphabet keeps the most frequent characters that fit the budget (ties broken
by code point); any other character, seen or unseen in training, is encoded as the `<0xNN>` tokens of its UTF-8
bytes and decoded back, so every normalised transcript round-trips exactly. `<unk>` is never produced by
encoding; it exists because `ParakeetTokenizer` and CTC tooling expect one. `uncovered_characters` tells which
characters of a text would take the byte path.

Vocabulary layout, `vocab_size` ids in total:

    0                      <unk>
    1 .. 256               <0x00> .. <0xFF>
    257 .. vocab_size - 2  learned alphabet and merges
    vocab_size - 1         <blank>: the CTC / TDT blank, also the pad token (ParakeetTokenizer drops it in decoding)

`save_pretrained` writes a plain `ParakeetTokenizer` that `AutoTokenizer.from_pretrained` loads without remote code.
"""

import json
from collections import Counter
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers.models.parakeet import ParakeetTokenizer

UNK_TOKEN = "<unk>"
BLANK_TOKEN = "<blank>"
BYTE_TOKENS = [f"<0x{byte:02X}>" for byte in range(256)]
NUM_RESERVED_IDS = 1 + len(BYTE_TOKENS) + 1  # <unk>, bytes, <blank>


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, max_token_length: int = 16, shrink_to_fit: bool = False
) -> ParakeetTokenizer:
    """Train a BPE tokenizer of exactly `vocab_size` ids (reserved ids included) on `texts`.

    A corpus too small for `vocab_size` raises, unless `shrink_to_fit`: then the vocabulary is what it yields.
    """
    texts = _validated_texts(texts)
    if vocab_size <= NUM_RESERVED_IDS:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: {NUM_RESERVED_IDS} ids are reserved "
            f"(<unk>, 256 byte tokens, <blank>), so vocab_size must be at least {NUM_RESERVED_IDS + 1}"
        )
    learned_size = vocab_size - NUM_RESERVED_IDS
    backend = _empty_backend()
    alphabet = _most_frequent_characters(backend, texts, learned_size)
    trainer = trainers.BpeTrainer(
        vocab_size=learned_size + 1,  # + the trainer's own <unk>
        special_tokens=[UNK_TOKEN],
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),  # the initial alphabet always wins, so the rest falls back to bytes
        max_token_length=max_token_length,
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    learned_vocab, merges = _learned_vocab_and_merges(backend)
    if len(learned_vocab) < learned_size and not shrink_to_fit:
        raise ValueError(
            f"the corpus yields only {len(learned_vocab)} subwords, too few for vocab_size={vocab_size}; "
            f"use vocab_size <= {len(learned_vocab) + NUM_RESERVED_IDS} or more transcripts"
        )
    backend.model = models.BPE(
        vocab={token: index for index, token in enumerate([UNK_TOKEN, *BYTE_TOKENS, *learned_vocab, BLANK_TOKEN])},
        merges=merges,
        unk_token=UNK_TOKEN,
        byte_fallback=True,
    )
    return ParakeetTokenizer(
        tokenizer_object=backend, unk_token=UNK_TOKEN, pad_token=BLANK_TOKEN, clean_up_tokenization_spaces=False
    )


def blank_id(tokenizer: ParakeetTokenizer) -> int:
    """The CTC / TDT blank id: the pad token, which must be the last id."""
    if tokenizer.pad_token_id != len(tokenizer) - 1:
        raise ValueError(
            f"the blank (pad token {tokenizer.pad_token!r}, id {tokenizer.pad_token_id}) "
            f"is not the last id {len(tokenizer) - 1} of the tokenizer"
        )
    return tokenizer.pad_token_id


def uncovered_characters(tokenizer: ParakeetTokenizer, text: str) -> set[str]:
    """Characters of `text` (after normalisation) that have no token of their own and would be encoded as bytes."""
    backend = tokenizer.backend_tokenizer
    normalized = backend.normalizer.normalize_str(text)
    return {char for char in set(normalized) - {" "} if backend.model.token_to_id(char) is None}


def _empty_backend() -> Tokenizer:
    """An untrained BPE `Tokenizer` with the normalisation, pre-tokenisation and decoding policy of the module."""
    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁")])
    return backend


def _validated_texts(texts: Iterable[str]) -> list[str]:
    """`texts` as a list; raises on a non-string row or a corpus with no characters at all."""
    texts = list(texts)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"transcript at row {row} is a {type(text).__name__}, expected str: {text!r}")
    if not any(text.strip() for text in texts):
        raise ValueError(f"cannot train a tokenizer: the corpus ({len(texts)} transcripts) has no characters")
    return texts


def _most_frequent_characters(backend: Tokenizer, texts: list[str], limit: int) -> list[str]:
    """The `limit` most frequent characters of the pre-tokenised corpus ("▁" included), ties by code point."""
    counts = Counter()
    for text in texts:
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            counts.update(word)
    ranked = sorted(counts, key=lambda char: (-counts[char], char))
    return ranked[:limit]


def _learned_vocab_and_merges(backend: Tokenizer) -> tuple[list[str], list[tuple[str, str]]]:
    """The trained BPE's tokens in id order (without its <unk>) and its merges in rank order."""
    vocab = backend.get_vocab(with_added_tokens=False)
    learned_vocab = [token for token in sorted(vocab, key=vocab.get) if token != UNK_TOKEN]
    merges = [tuple(pair) for pair in json.loads(backend.to_str())["model"]["merges"]]
    return learned_vocab, merges
