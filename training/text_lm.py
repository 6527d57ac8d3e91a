"""A small causal language model trained here on text only: the offline default LLM of the speech -> causal LM model.

Zero-AVSR's unified model feeds speech features to a causal LM (Llama-3.2, Qwen3 on the Hub). Without the Hub, this
module trains a stand-in of the same kind and saves it as a stock transformers folder, which
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` load with no avalign code:

    train_tokenizer_for_lm   a byte-level BPE tokenizer (as GPT-2 and Llama-3 have): every text is encodable, none
                             of its characters is unknown, and decode(encode(text)) == text (NFC text)
    train_text_lm            a `LlamaForCausalLM` (tied embeddings) on bos + text + eos examples, held-out loss and
                             perplexity in metrics.json next to the model and tokenizer
    character_coverage       which characters the tokenizer has no single token for (byte pieces) or cannot encode
"""

import json
import logging
import math
import os
import random
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, get_cosine_schedule_with_warmup

from .precision import autocast, choose_precision, use_fast_attention
from .roman.deromanize import METRICS_FILE, epoch_batches, one_thread

logger = logging.getLogger("avalign")

BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
# GPT-2's split pattern with combining marks (\p{M}) kept inside words: Indic vowel signs and viramas are marks,
# which the stock pattern cuts off into pieces of their own ("दाईं" -> "द", "ा", "ई", "ं"), so that BPE never
# learns whole syllables or words of those scripts.
SPLIT_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+"


@dataclass
class TextLMConfig:
    """The `LlamaConfig` sizes; the defaults train in minutes on two CPU cores."""

    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    vocab_size: int = 2000  # upper bound: a small corpus yields fewer BPE merges
    max_length: int = 256  # tokens per training example (bos + text + eos, longer ones cut), max positions


def new_text_lm(config: TextLMConfig, vocab_size: int, **special_token_ids) -> LlamaForCausalLM:
    """A randomly initialised `LlamaForCausalLM` of `config`'s sizes (tied embeddings), seeded by the caller."""
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads, max_position_embeddings=config.max_length, tie_word_embeddings=True,
        **special_token_ids,
    ))  # fmt: skip


def train_tokenizer_for_lm(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of at most `vocab_size` ids trained on `texts`: the three special tokens (ids 0-2),
    the 256 byte symbols, then merges. It adds bos in front of each text (as Llama-3's does); it has no unk token."""
    special_tokens = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN]
    minimum = len(special_tokens) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < minimum:
        raise ValueError(f"vocab_size={vocab_size} is too small: the special tokens and bytes alone take {minimum}")
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    backend.train_from_iterator(texts, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN}:1 $B:1", special_tokens=[(BOS_TOKEN, 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )  # fmt: skip


def character_coverage(tokenizer, texts: Iterable[str]) -> dict:
    """Of the distinct non-space characters of `texts`: those the tokenizer encodes as the unk token (where it has
    one), and those it only ever spells with byte pieces: no token of any word of `texts` holds them whole (a
    byte-level tokenizer does this for a script it never learnt; BPE merges across character boundaries elsewhere,
    so a character is judged by its best occurrence, in its words). -> {"characters": n, "unknown": [...],
    "byte_split": [...]} (sorted)."""
    characters, unknown, whole = set(), set(), set()
    for word in {word for text in texts for word in text.split()}:
        characters.update(word)
        encoded = tokenizer(word, add_special_tokens=False, return_offsets_mapping=True)
        for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
            if tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id:
                unknown.update(word[start:end])
            elif "\ufffd" not in tokenizer.decode([token_id]):  # whole characters, not part of one's bytes
                whole.update(word[start:end])
    return {"characters": len(characters), "unknown": sorted(unknown),
            "byte_split": sorted(characters - whole - unknown)}  # fmt: skip


def distinct_texts(texts: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """Each NFC-normalised, stripped text once (first occurrence order), and the counts of what was dropped."""
    kept, counts = {}, {"input": 0, "empty": 0, "duplicates": 0}
    for text in texts:
        counts["input"] += 1
        text = unicodedata.normalize("NFC", text).strip()
        if not text:
            counts["empty"] += 1
        elif text in kept:
            counts["duplicates"] += 1
        else:
            kept[text] = None
    return list(kept), counts


def batch_tensors(examples: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask / labels (B, longest), right-padded; labels -100 on padding."""
    input_ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(ids) for ids in examples], True, pad_id)  # (B, L)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(examples):
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100)}  # fmt: skip


@torch.no_grad()
def mean_token_loss(model: LlamaForCausalLM, examples: list[list[int]], pad_id: int, batch_size: int) -> float:
    """The next-token cross-entropy over all predicted tokens of `examples` (each weighted alike)."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = batch_tensors(examples[start : start + batch_size], pad_id)
        count = int((batch["labels"][:, 1:] != -100).sum())  # the model predicts every label but the first
        total += model(**batch).loss.item() * count
        tokens += count
    return total / tokens


def train_text_lm(
    texts: Sequence[str],
    output_dir: str | os.PathLike,
    steps: int = 1500,
    seed: int = 0,
    config: TextLMConfig | None = None,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    held_out_fraction: float = 0.05,
    mixed_precision: str = "auto",
) -> dict:
    """Trains a tokenizer and a `LlamaForCausalLM` on the distinct non-empty `texts` less a held-out fraction, saves
    both to `output_dir` (a stock transformers folder) with metrics.json and returns the metrics: held-out loss and
    perplexity, the last training loss, the counts (input texts, empty, duplicates, train, held-out), parameters,
    vocabulary size, steps, seconds and the precision it trained at (`mixed_precision`, as the other stages': bf16
    autocast where the CPU runs bf16 natively, training/precision.py)."""
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least one training step")
    if mixed_precision == "fp16":
        raise ValueError("mixed_precision fp16: the text LM trains on the CPU without loss scaling; use auto, bf16 or no")
    start = time.perf_counter()
    config = config or TextLMConfig()
    unique, counts = distinct_texts(texts)
    if not unique:
        raise ValueError(f"no text to train on: all {counts['input']} texts are empty after cleaning")
    if len(unique) < 2:
        raise ValueError(f"{len(unique)} distinct text, need >= 2 to hold one out")
    random.Random(seed).shuffle(unique)
    count = min(len(unique) - 1, max(1, round(held_out_fraction * len(unique))))
    held_out, train = unique[:count], unique[count:]

    tokenizer = train_tokenizer_for_lm(train, config.vocab_size)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}  # fmt: skip

    def encode(text: str) -> list[int]:
        return [special["bos_token_id"], *tokenizer.encode(text, add_special_tokens=False),
                special["eos_token_id"]][: config.max_length]  # fmt: skip

    train_examples, held_out_examples = list(map(encode, train)), list(map(encode, held_out))
    torch.manual_seed(seed)
    model = new_text_lm(config, len(tokenizer), **special)
    model.generation_config.update(**special)  # generate() stops at eos and pads with pad
    precision = choose_precision(mixed_precision, "cpu")  # the model trains where it is built
    use_fast_attention(model, precision)
    logger.info("text LM: mixed precision %s (%s)", precision.precision, precision.reason)

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=steps // 20, num_training_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    model.train()
    with one_thread():  # a small model: on a busy machine, spin-waiting threads made steps 30x slower
        for step in range(steps):
            if not batches:
                batches = epoch_batches([len(ids) for ids in train_examples], batch_size, generator)
            with autocast(precision):
                loss = model(**batch_tensors([train_examples[i] for i in batches.pop()], special["pad_token_id"])).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if step % 100 == 0 or step == steps - 1:
                logger.info("text LM step %d/%d loss %.3f", step + 1, steps, loss.item())

    held_out_loss = mean_token_loss(model, held_out_examples, special["pad_token_id"], batch_size)
    metrics = {
        "held_out_loss": held_out_loss,
        "held_out_perplexity": math.exp(held_out_loss),
        "train_loss": loss.item(),
        "counts": {**counts, "train": len(train), "held_out": len(held_out)},
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "vocab_size": len(tokenizer),
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "precision": precision.to_dict(),
    }
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (Path(output_dir) / METRICS_FILE).write_text(json.dumps(metrics, indent=2), "utf-8")
    return metrics
