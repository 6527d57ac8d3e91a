"""De-romanization: Roman-script text (the output of a romanized-target ASR model) back to the native script.

Two interchangeable de-romanizers, both `deromanize(texts, languages) -> list[str]`:

    CausalLMDeromanizer   any Hugging Face causal LM, prompted per language ("Write this romanized Hindi sentence
                          in Devanagari script", optional few-shot pairs), greedy, one line of output
    CharTransliterator    the offline default: a small character-level Transformer encoder-decoder (source: a
                          language tag + Roman characters, target: native characters) that works word by word
                          (as uroman does), trained here by `train_transliterator` on the words of
                          (language, roman, native) sentence triples

`load_deromanizer("char:<folder>")` or `load_deromanizer("lm:<model id or path>")` picks one. Inputs are normalised
like the romanized targets (lower case, single spaces); an empty text gives "" without a model call; English (Latin
script) is its own romanization and passes through unchanged; a language the de-romanizer cannot write raises
`ValueError` naming the row.

    python -m avalign.training.roman.deromanize --corpus DIR --output-dir OUT [--steps 1000] [--roman-cache FILE]

trains a `CharTransliterator` on the romanized `reference_transcript` of the corpus splits (by default the
training-side ones, so that no dev/test sentence is in its data) and prints its metrics: CER on held-out sentences
it never saw, next to the CER of copying the Roman input.
"""

import argparse
import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList, get_cosine_schedule_with_warmup

from avalign.modeling.configuration_speech_llm import DEROMANIZATION_INSTRUCTION
from avalign.modeling.script_constraint import ScriptConstraint

from ..evaluation.metrics import score
from ..logs import setup_logging
from ..schema import LANGUAGE_NAMES, TRAIN_SIDE_SPLITS
from .romanize import RomanizationCache, normalize_roman, romanize

logger = logging.getLogger("avalign")

SCRIPTS = {
    "hi": "Devanagari", "mr": "Devanagari", "bn": "Bengali", "ta": "Tamil", "te": "Telugu",
    "kn": "Kannada", "gu": "Gujarati", "ml": "Malayalam", "pa": "Gurmukhi", "en": "Latin",
}  # fmt: skip
PASSTHROUGH_LANGUAGES = tuple(language for language, script in SCRIPTS.items() if script == "Latin")
CONFIG_FILE, VOCABULARY_FILE, WEIGHTS_FILE = "config.json", "vocab.json", "model.safetensors"
METRICS_FILE = "metrics.json"

Pair = tuple[str, str, str]  # (language, roman, native)


class Deromanizer:
    """The shared `deromanize(texts, languages)`: checks, normalisation, Latin-script pass-through; subclasses
    write the other languages in `deromanize_native` and list them in `languages`."""

    languages: Sequence[str]

    def deromanize(self, texts: Sequence[str], languages: Sequence[str]) -> list[str]:
        """Native-script versions of Roman-script `texts`, one language code per text. Texts are normalised like
        the romanized targets; an empty text gives ""; a Latin-script language (`PASSTHROUGH_LANGUAGES`) is its
        own romanization and comes back as it is."""
        if len(texts) != len(languages):
            raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
        for row, language in enumerate(languages):
            if language not in self.languages and language not in PASSTHROUGH_LANGUAGES:
                known = sorted({*self.languages, *PASSTHROUGH_LANGUAGES})
                raise ValueError(f"text {row}: {type(self).__name__} cannot write {language!r}; it knows {known}")
        outputs = [normalize_roman(text) for text in texts]
        rows = [row for row, text in enumerate(outputs) if text and languages[row] not in PASSTHROUGH_LANGUAGES]
        natives = self.deromanize_native([outputs[row] for row in rows], [languages[row] for row in rows])
        for row, native in zip(rows, natives):
            outputs[row] = native
        return outputs

    def deromanize_native(self, texts: list[str], languages: list[str]) -> list[str]:
        """Normalised, non-empty texts of languages in `self.languages` -> native script."""
        raise NotImplementedError


def map_in_batches(function: Callable[[list], list], items: Sequence, batch_size: int, length: Callable) -> list:
    """`function` over batches of `items` of similar `length` (less padding), results in the order of `items`."""
    order = sorted(range(len(items)), key=lambda index: length(items[index]))
    results = [None] * len(items)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        for index, result in zip(batch, function([items[index] for index in batch])):
            results[index] = result
    return results


# ----------------------------------------------------------------------------- causal LM


def deromanization_prompt(text: str, language: str, examples: Iterable[Pair] = ()) -> str:
    """The causal-LM de-romanizer's prompt: an instruction, the few-shot `examples` of `language`, then "Roman:
    <text>" and the language's name, after which the LM writes the native script. (The text-only LM the pipeline
    trains reads sentences in this form, so that the cascade through it is fair.)"""
    name = LANGUAGE_NAMES[language]
    shots = "".join(f"Roman: {roman}\n{name}: {native}\n\n" for shot_language, roman, native in examples
                    if shot_language == language)  # fmt: skip
    instruction = DEROMANIZATION_INSTRUCTION.format(language=name, script=SCRIPTS[language])
    return f"{instruction}\n\n{shots}Roman: {text}\n{name}:"


class CausalLMDeromanizer(Deromanizer):
    """A causal LM completing "Roman: <text>\\n<Language>:" after an instruction and optional few-shot pairs.

    `examples` are (language, roman, native) triples; each prompt shows those of its own language. Decoding is
    greedy, at most `max_new_tokens_per_character` tokens per input character (+ 8), and stops at the first newline;
    with `constrain_to_script`, it writes only characters of the row's script (`ScriptConstraint`).
    """

    def __init__(
        self,
        model_id_or_path: str | os.PathLike,
        device: str | torch.device | None = None,
        examples: Iterable[Pair] = (),
        batch_size: int = 8,
        max_new_tokens_per_character: float = 3.0,
        constrain_to_script: bool = False,
    ):
        self.tokenizer = AutoTokenizer.from_pretrained(model_id_or_path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_id_or_path).to(device or "cpu").eval()
        self.examples = list(examples)
        self.languages = tuple(language for language in SCRIPTS if language not in PASSTHROUGH_LANGUAGES)
        self.batch_size = batch_size
        self.max_new_tokens_per_character = max_new_tokens_per_character
        self.constrain_to_script = constrain_to_script

    def prompt(self, text: str, language: str) -> str:
        return deromanization_prompt(text, language, self.examples)

    def deromanize_native(self, texts: list[str], languages: list[str]) -> list[str]:
        items = list(zip(texts, languages))
        return map_in_batches(self.complete, items, self.batch_size, length=lambda item: len(item[0]))

    def max_new_tokens(self, text: str) -> int:
        return math.ceil(self.max_new_tokens_per_character * len(text)) + 8

    @torch.no_grad()
    def complete(self, items: list[tuple[str, str]]) -> list[str]:
        """One batched greedy generation for (text, language) items: the first line of each completion. Each row is
        cut to its own token budget, so the output does not depend on what it was batched with."""
        prompts = [self.prompt(text, language) for text, language in items]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.model.device)
        budgets = [self.max_new_tokens(text) for text, _ in items]
        scripts = [SCRIPTS[language] for _, language in items]
        prompt_length = inputs["input_ids"].shape[1]
        processors = [ScriptConstraint(self.tokenizer, scripts, prompt_length)] if self.constrain_to_script else []
        generated = self.model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=max(budgets),
            stop_strings=["\n"],
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList(processors),
        )  # (B, prompt length + new tokens)
        new_tokens = generated[:, inputs["input_ids"].shape[1] :].tolist()
        completions = self.tokenizer.batch_decode(
            [tokens[:budget] for tokens, budget in zip(new_tokens, budgets)], skip_special_tokens=True
        )
        return [completion.split("\n", 1)[0].strip() for completion in completions]


# ----------------------------------------------------------------------------- character-level seq2seq

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = range(len(SPECIAL_TOKENS))


def language_tag(language: str) -> str:
    return f"<{language}>"


@dataclass
class TransliteratorConfig:
    hidden_size: int = 64
    num_heads: int = 4
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    feedforward_size: int = 128
    dropout: float = 0.1


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sine/cosine position encodings (no maximum length)."""
    positions = torch.arange(length, dtype=torch.float32)[:, None]
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    encodings = torch.zeros(length, dim)
    encodings[:, 0::2] = torch.sin(positions * frequencies)
    encodings[:, 1::2] = torch.cos(positions * frequencies)
    return encodings


class CharSeq2Seq(nn.Module):
    """Pre-norm Transformer encoder-decoder over one shared character vocabulary (source and target)."""

    def __init__(self, config: TransliteratorConfig, vocabulary_size: int):
        super().__init__()
        width = config.hidden_size
        self.embedding = nn.Embedding(vocabulary_size, width, padding_idx=PAD)
        layer_args = dict(
            d_model=width, nhead=config.num_heads, dim_feedforward=config.feedforward_size,
            dropout=config.dropout, batch_first=True, norm_first=True,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer_args), config.num_encoder_layers, nn.LayerNorm(width),
            enable_nested_tensor=False,
        )  # fmt: skip
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**layer_args), config.num_decoder_layers, nn.LayerNorm(width)
        )
        self.output = nn.Linear(width, vocabulary_size)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, D). Unscaled: N(0, 1) embeddings and the +-1 positions weigh alike, which repeated
        characters ("tt" -> "ത്ത്") need to be told apart."""
        return self.embedding(ids) + sinusoidal_positions(ids.shape[1], self.embedding.embedding_dim).to(ids.device)

    def encode(self, source_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) -> memory (B, S, D) and its padding mask (B, S), True at padding."""
        source_padding = source_ids == PAD
        return self.encoder(self.embed(source_ids), src_key_padding_mask=source_padding), source_padding

    def decode(self, target_ids: torch.Tensor, memory: torch.Tensor, source_padding: torch.Tensor) -> torch.Tensor:
        """(B, T) target prefix -> (B, T, V) next-character logits. Target padding only ever follows the real
        characters, so the causal mask alone keeps it out of their attention."""
        length = target_ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=target_ids.device).triu(1)
        hidden = self.decoder(
            self.embed(target_ids), memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=source_padding
        )
        return self.output(hidden)

    def forward(self, source_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        return self.decode(target_ids, *self.encode(source_ids))

    @torch.no_grad()
    def generate(self, source_ids: torch.Tensor, max_length: int) -> torch.Tensor:
        """Greedy decoding: (B, S) -> (B, <= max_length) ids, PAD after each sequence's EOS."""
        memory, source_padding = self.encode(source_ids)
        target = torch.full((len(source_ids), 1), BOS, dtype=torch.long, device=source_ids.device)
        finished = torch.zeros(len(source_ids), dtype=torch.bool, device=source_ids.device)
        for _ in range(max_length):
            next_ids = self.decode(target, memory, source_padding)[:, -1].argmax(-1).masked_fill(finished, PAD)  # (B,)
            target = torch.cat([target, next_ids[:, None]], dim=1)
            finished |= next_ids == EOS
            if finished.all():
                break
        return target[:, 1:]


@contextlib.contextmanager
def one_thread():
    """Runs the block on one intra-op thread: the transliterator's ops are too small to gain from more, and on a
    busy machine the threads' spin-waits made training ~6x slower (57 s against 9.6 s for the test model)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def pad_sequences(sequences: list[list[int]]) -> torch.Tensor:
    """(B, longest) LongTensor, PAD on the right."""
    padded = torch.full((len(sequences), max(map(len, sequences))), PAD, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.tensor(sequence)
    return padded


class CharTransliterator(Deromanizer):
    """A `CharSeq2Seq` with its vocabulary: special tokens, one tag per language ("<hi>"), then characters.

    It transliterates word by word, as uroman romanizes (each space-separated word on its own): each distinct
    (language, word) of a `deromanize` call goes through the model once; words are joined back with single spaces. Characters never seen in
    training become `<unk>`; a word's output is at most 2 x its length + 10 characters (a virama or vowel sign
    makes native text up to about twice as long as its romanization), so an undertrained model's loop ends.
    """

    def __init__(self, vocabulary: Sequence[str], config: TransliteratorConfig | None = None, batch_size: int = 64):
        self.vocabulary = list(vocabulary)
        self.token_ids = {token: index for index, token in enumerate(self.vocabulary)}
        self.config = config or TransliteratorConfig()
        self.model = CharSeq2Seq(self.config, len(self.vocabulary)).eval()
        self.languages = tuple(token[1:-1] for token in self.vocabulary[len(SPECIAL_TOKENS) :] if len(token) > 1)
        self.batch_size = batch_size

    @classmethod
    def from_words(cls, words: Sequence[Pair], config: TransliteratorConfig | None = None) -> "CharTransliterator":
        """A fresh (untrained) model whose vocabulary covers the languages and characters of `words`."""
        tags = sorted({language_tag(language) for language, _, _ in words})
        characters = sorted({character for _, roman, native in words for character in roman + native})
        return cls([*SPECIAL_TOKENS, *tags, *characters], config)

    def encode_source(self, word: str, language: str) -> list[int]:
        return [self.token_ids[language_tag(language)], *(self.token_ids.get(char, UNK) for char in word)]

    def encode_target(self, word: str) -> list[int]:
        return [BOS, *(self.token_ids.get(char, UNK) for char in word), EOS]

    def decode_target(self, ids: Iterable[int]) -> str:
        characters = []
        for index in ids:
            if index == EOS:
                break
            if index >= len(SPECIAL_TOKENS) and len(self.vocabulary[index]) == 1:  # no special token, no tag
                characters.append(self.vocabulary[index])
        return "".join(characters)

    def transliterate_words(self, words: Sequence[tuple[str, str]]) -> list[str]:
        """Native forms of (language, roman word) items, greedy, in batches of similar length."""
        with one_thread():
            return map_in_batches(self.transliterate_batch, words, self.batch_size, length=lambda word: len(word[1]))

    def transliterate_batch(self, words: list[tuple[str, str]]) -> list[str]:
        """One batched greedy decoding; each word is cut to its own length budget, so that its output does not
        depend on the other words of the batch."""
        budgets = [2 * len(word) + 10 for _, word in words]
        source_ids = pad_sequences([self.encode_source(word, language) for language, word in words])  # (B, S)
        device = next(self.model.parameters()).device
        generated = self.model.eval().generate(source_ids.to(device), max_length=max(budgets))  # (B, <= max budget)
        return [self.decode_target(ids[:budget]) for ids, budget in zip(generated.tolist(), budgets)]

    def deromanize_native(self, texts: list[str], languages: list[str]) -> list[str]:
        words = sorted({(language, word) for text, language in zip(texts, languages) for word in text.split()})
        natives = dict(zip(words, self.transliterate_words(words)))
        return [" ".join(natives[language, word] for word in text.split()) for text, language in zip(texts, languages)]

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2), "utf-8")
        (folder / VOCABULARY_FILE).write_text(json.dumps(self.vocabulary, ensure_ascii=False), "utf-8")
        save_file(self.model.state_dict(), folder / WEIGHTS_FILE)

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str | torch.device | None = None) -> "CharTransliterator":
        folder = Path(folder)
        missing = [name for name in (CONFIG_FILE, VOCABULARY_FILE, WEIGHTS_FILE) if not (folder / name).exists()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a CharTransliterator folder: {missing} missing")
        config = TransliteratorConfig(**json.loads((folder / CONFIG_FILE).read_text("utf-8")))
        transliterator = cls(json.loads((folder / VOCABULARY_FILE).read_text("utf-8")), config)
        transliterator.model.load_state_dict(load_file(folder / WEIGHTS_FILE))
        transliterator.model.to(device or "cpu")
        return transliterator


# ----------------------------------------------------------------------------- training the transliterator


def unique_sentences(pairs: Iterable[Pair], keep_latin: bool = False) -> tuple[list[Pair], dict[str, int]]:
    """Each (language, native) sentence once, without pairs that have an empty side or (unless `keep_latin`) a
    Latin-script language (passed through, nothing to transliterate), and the counts of what was dropped."""
    kept, seen = [], set()
    counts = {"input": 0, "skipped_empty": 0, "skipped_latin_script": 0, "duplicates": 0}
    for language, roman, native in pairs:
        counts["input"] += 1
        roman, native = normalize_roman(roman), " ".join(native.split())
        if not roman or not native:
            counts["skipped_empty"] += 1
        elif language in PASSTHROUGH_LANGUAGES and not keep_latin:
            counts["skipped_latin_script"] += 1
        elif (language, native) in seen:
            counts["duplicates"] += 1
        else:
            seen.add((language, native))
            kept.append((language, roman, native))
    return kept, counts


def word_pairs(sentences: Iterable[Pair]) -> list[Pair]:
    """Each distinct (language, roman word, native word) of `sentences` whose Roman and native sides have as many
    words (uroman keeps word boundaries), in first-occurrence order."""
    pairs = {}
    for language, roman, native in sentences:
        roman_words, native_words = roman.split(), native.split()
        if len(roman_words) == len(native_words):
            pairs.update(dict.fromkeys((language, *words) for words in zip(roman_words, native_words)))
    return list(pairs)


def reading_drills(sentences: Sequence[Pair], seed: int = 0) -> list[Pair]:
    """One drill per sentence of `sentences`: as many words, each drawn at random from the word pairs of the
    sentence's language. A drill has no template to fall back on, so a model that writes its native side must read
    its Roman side word by word."""
    rng = random.Random(seed)
    vocabulary = {}
    for language, roman_word, native_word in word_pairs(sentences):
        vocabulary.setdefault(language, []).append((roman_word, native_word))
    drills = []
    for language, roman, _ in sentences:
        if language in vocabulary:
            words = [rng.choice(vocabulary[language]) for _ in roman.split()]
            drills.append((language, " ".join(r for r, _ in words), " ".join(n for _, n in words)))
    return drills


def split_held_out(sentences: list[Pair], held_out_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, held_out): `held_out_fraction` of each language's sentences (at least one), drawn with `seed`."""
    rng = random.Random(seed)
    train, held_out = [], []
    for language in sorted({language for language, _, _ in sentences}):
        group = [sentence for sentence in sentences if sentence[0] == language]
        if len(group) < 2:
            raise ValueError(f"language {language!r}: {len(group)} distinct sentence(s), need >= 2 to hold one out")
        rng.shuffle(group)
        count = max(1, round(held_out_fraction * len(group)))
        held_out += group[:count]
        train += group[count:]
    return train, held_out


def sentence_words(sentences: Iterable[Pair]) -> tuple[list[Pair], int]:
    """Distinct (language, roman word, native word) triples of sentences whose two sides have as many words, and
    the number of sentences skipped because they do not."""
    words, misaligned = set(), 0
    for language, roman, native in sentences:
        roman_words, native_words = roman.split(), native.split()
        if len(roman_words) != len(native_words):
            misaligned += 1
            continue
        words.update((language, roman_word, native_word) for roman_word, native_word in zip(roman_words, native_words))
    return sorted(words), misaligned


def records(items: Sequence[Pair], hypotheses: Sequence[str]) -> list[dict]:
    return [
        {"language": language, "reference": native, "hypothesis": hypothesis}
        for (language, _, native), hypothesis in zip(items, hypotheses)
    ]


def held_out_scores(transliterator: CharTransliterator, held_out: list[Pair], train_words: list[Pair]) -> dict:
    """On the held-out sentences: the transliterator's CER/WER, that of copying the Roman input, and the CER on
    the held-out words never seen in training (the part that memorisation cannot answer)."""
    romans = [roman for _, roman, _ in held_out]
    scores = {
        "held_out": score(records(held_out, transliterator.deromanize(romans, [pair[0] for pair in held_out]))),
        "copy_baseline": score(records(held_out, romans)),
    }
    seen = {(language, roman) for language, roman, _ in train_words}
    unseen = [word for word in sentence_words(held_out)[0] if word[:2] not in seen]
    unseen_hypotheses = transliterator.transliterate_words([word[:2] for word in unseen]) if unseen else []
    scores["unseen_words"] = score(records(unseen, unseen_hypotheses))["overall"] if unseen else {"num_utterances": 0}
    return scores


def epoch_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of index batches of similar lengths (less padding), in random order: a random permutation is cut
    into pools of 8 batches and each pool sorted by length before it is cut into batches."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool_size = 8 * batch_size
    batches = []
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start : start + pool_size], key=lengths.__getitem__)
        batches += [pool[first : first + batch_size] for first in range(0, len(pool), batch_size)]
    return [batches[index] for index in torch.randperm(len(batches), generator=generator).tolist()]


def train_transliterator(
    pairs: Iterable[Pair],
    output_dir: str | os.PathLike,
    steps: int = 1000,
    seed: int = 0,
    config: TransliteratorConfig | None = None,
    batch_size: int = 64,
    learning_rate: float = 5e-3,
    held_out_fraction: float = 0.1,
) -> dict:
    """Trains a `CharTransliterator` on the words of (language, roman, native) sentence triples, saves it to
    `output_dir` with metrics.json and returns the metrics: held-out CER/WER on unseen sentences of the same
    languages, the copy-the-input baseline on them, the CER on held-out words absent from training, the counts
    (input pairs, skipped: empty / Latin-script / duplicates / misaligned, train and held-out sentences, train
    words), parameters and seconds."""
    start = time.perf_counter()
    sentences, counts = unique_sentences(pairs)
    train, held_out = split_held_out(sentences, held_out_fraction, seed)
    words, misaligned = sentence_words(train)
    torch.manual_seed(seed)
    transliterator = CharTransliterator.from_words(words, config)
    model = transliterator.model.train()
    sources = [transliterator.encode_source(roman, language) for language, roman, _ in words]
    targets = [transliterator.encode_target(native) for _, _, native in words]

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=steps // 20, num_training_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    with one_thread():
        for step in range(steps):
            if not batches:
                batches = epoch_batches([len(source) for source in sources], batch_size, generator)
            batch = batches.pop()
            target_ids = pad_sequences([targets[i] for i in batch])  # (B, T + 1): BOS ... EOS
            logits = model(pad_sequences([sources[i] for i in batch]), target_ids[:, :-1])  # (B, T, V)
            loss = F.cross_entropy(logits.transpose(1, 2), target_ids[:, 1:], ignore_index=PAD)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if step % 100 == 0 or step == steps - 1:
                logger.info("transliterator step %d/%d loss %.3f", step + 1, steps, loss.item())
    model.eval()

    metrics = {
        **held_out_scores(transliterator, held_out, words),
        "counts": {**counts, "misaligned": misaligned, "train": len(train), "held_out": len(held_out),
                   "train_words": len(words)},
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "steps": steps,
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    transliterator.save(output_dir)
    (Path(output_dir) / METRICS_FILE).write_text(json.dumps(metrics, indent=2), "utf-8")
    return metrics


def corpus_pairs(
    corpus: datasets.DatasetDict, cache_path: str | os.PathLike | None, splits: Sequence[str] = TRAIN_SIDE_SPLITS
) -> list[Pair]:
    """(language, roman, native) triples from the `reference_transcript` of `splits`, romanized through the cache.

    The default keeps to the training-side splits, so that no dev/test sentence is in the de-romanizer's data."""
    cache = RomanizationCache(cache_path)
    pairs = []
    for split in splits:
        languages, natives = corpus[split]["language"], corpus[split]["reference_transcript"]
        pairs += zip(languages, romanize(natives, languages, cache), natives)
    return pairs


def load_deromanizer(spec: str, device: str | torch.device | None = None, constrain_to_script: bool = False
                     ) -> Deromanizer:  # fmt: skip
    """"char:<folder>" (a saved `CharTransliterator`) or "lm:<model id or path>" (`CausalLMDeromanizer`, its output
    held to the row's script with `constrain_to_script`)."""
    kind, _, location = spec.partition(":")
    if kind == "char" and location:
        return CharTransliterator.load(location, device)
    if kind == "lm" and location:
        return CausalLMDeromanizer(location, device, constrain_to_script=constrain_to_script)
    raise ValueError(f"de-romanizer spec {spec!r}: expected 'char:<folder>' or 'lm:<model id or path>'")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="DatasetDict folder (save_to_disk) with reference_transcript")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--roman-cache", type=Path, help="romanization cache (default: OUTPUT_DIR/roman_cache.json)")
    parser.add_argument("--splits", nargs="+", default=list(TRAIN_SIDE_SPLITS), help="splits whose sentences to use")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    corpus = datasets.load_from_disk(args.corpus)
    pairs = corpus_pairs(corpus, args.roman_cache or args.output_dir / "roman_cache.json", args.splits)
    metrics = train_transliterator(pairs, args.output_dir, steps=args.steps, seed=args.seed)
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
