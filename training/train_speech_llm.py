"""Zero-AVSR's unified model: train a projector and the LLM's LoRA adapter over a frozen roman-target romanizer.

    accelerate launch training/train_speech_llm.py --config training/configs/speech_llm_demo.yaml \
        --corpus runs/demo/corpus --romanizer runs/demo/asr/zeroshot-bn-aligned --llm runs/demo/text_lm \
        --held_out_languages bn --output_dir runs/demo/unified/zeroshot-bn-aligned

Two tasks, drawn per batch: speech -> native script, on the `train` speech of the seen languages, and, with
probability `text_task_probability`, Roman text -> native script, on the sentences of every language (the held-out
ones included) from the training-side splits. The held-out languages' speech is never read: their rows leave the
dataset (by its `language` column alone) before any loader sees it. That is what makes their test zero-shot.
"""

import logging
import random
import time
from dataclasses import dataclass, field

import jiwer
import torch
from accelerate.utils import set_seed
from datasets import load_from_disk

from avalign.modeling import SpeechLLMConfig, SpeechLLMForConditionalGeneration
from avalign.training.data.batching import SpeechCollator
from avalign.training.data.splits import clean, load_splits
from avalign.training.evaluate_asr import speech_batches, transcribe_batches
from avalign.training.logs import setup_logging
from avalign.training.precision import use_fast_attention
from avalign.training.roman.deromanize import (
    PASSTHROUGH_LANGUAGES, SCRIPTS, corpus_pairs, reading_drills, unique_sentences,
)
from avalign.training.schema import LANGUAGE_NAMES
from avalign.training.text_lm import character_coverage
from avalign.training.trainer import StageArguments, StageTrainer, arguments_to_dict, parse_arguments

logger = logging.getLogger("avalign")
MODEL_OPTIONS = ("projector_type", "projector_stride", "projector_hidden_size", "projector_activation",
                 "speech_compression", "roman_piece_slot", "roman_token_slot", "lora_rank",
                 "lora_alpha", "lora_dropout", "lora_target_modules", "load_in_4bit", "max_new_tokens",
                 "constrain_to_script")  # fmt: skip


@dataclass
class SpeechLLMArguments:
    corpus: str = field(metadata={"help": "a DatasetDict folder in the common schema with transcripts"})
    romanizer: str = field(metadata={"help": "a roman-target stage-3 folder (train_asr --targets roman)"})
    llm: str = field(metadata={"help": "the base causal LM: a Hub id or a folder (AutoModelForCausalLM)"})
    held_out_languages: list[str] = field(default_factory=list, metadata={
        "help": "languages whose speech is never read (their Roman text still trains the text task)"})
    languages: list[str] | None = field(default=None, metadata={"help": "default: every language of the corpus"})
    train_split: str = "train"
    eval_split: str = "dev"
    romanization_cache: str | None = None
    text_task_probability: float = field(default=0.3, metadata={"help": "Zero-AVSR's back_trans_prob"})
    text_task_drills: bool = field(default=False, metadata={
        "help": "the text task also draws reading drills (deromanize.reading_drills: random words of each sentence's "
                "language), which no template predicts"})  # fmt: skip
    text_task_noise: float = field(default=0.0, metadata={
        "help": "the text task misspells its Roman texts as a romanizer would: each character substituted, dropped "
                "or followed by an extra one, with a probability drawn per sentence from [0, text_task_noise]"})  # fmt: skip
    text_task_noise_held_out_only: bool = field(default=False, metadata={
        "help": "misspell only the held-out languages' texts: the romanizer reads the seen ones well, not those"})
    text_task_latin: bool = field(default=False, metadata={
        "help": "the text task also copies Latin-script languages' sentences (English: its Roman text is its native "
                "text), never misspelt, with reading drills too under --text_task_drills"})
    # the model's options (SpeechLLMConfig documents them), with its defaults
    projector_type: str = SpeechLLMConfig.projector_type
    projector_stride: int = SpeechLLMConfig.projector_stride
    projector_hidden_size: int = SpeechLLMConfig.projector_hidden_size
    projector_activation: str = SpeechLLMConfig.projector_activation
    speech_compression: str = SpeechLLMConfig.speech_compression
    roman_piece_slot: bool = SpeechLLMConfig.roman_piece_slot
    roman_token_slot: bool = SpeechLLMConfig.roman_token_slot
    lora_rank: int = SpeechLLMConfig.lora_rank
    lora_alpha: int = SpeechLLMConfig.lora_alpha
    lora_dropout: float = SpeechLLMConfig.lora_dropout
    lora_target_modules: list[str] = field(default_factory=lambda: list(SpeechLLMConfig.lora_target_modules))
    load_in_4bit: bool = SpeechLLMConfig.load_in_4bit
    max_new_tokens: int = SpeechLLMConfig.max_new_tokens
    constrain_to_script: bool = SpeechLLMConfig.constrain_to_script
    max_byte_fraction: float = field(default=0.5, metadata={
        "help": "refuse a tokenizer that spells more than this fraction of the target characters with byte pieces"})
    eval_utterances: int = field(default=48, metadata={"help": "dev utterances decoded at each evaluation"})
    cache_encoder_outputs: bool = field(default=True, metadata={
        "help": "run the frozen encoder once over the training speech and keep its outputs in memory "
                "(T' x D floats per utterance), not once per step"})  # fmt: skip
    cache_with_dropout: bool = field(default=False, metadata={
        "help": "compute the cached encoder outputs with the romanizer's own dropout on: one fixed noisy view of each "
                "utterance, whose CTC transcript in the speech slot errs more than at inference"})  # fmt: skip
    min_seconds: float = 0.3
    max_seconds: float = 30.0

    def __post_init__(self):
        if not 0.0 <= self.text_task_probability <= 1.0:
            raise ValueError(f"--text_task_probability must be in [0, 1], got {self.text_task_probability}")
        if not 0.0 <= self.text_task_noise <= 1.0:
            raise ValueError(f"--text_task_noise must be in [0, 1], got {self.text_task_noise}")
        if self.lora_rank == 0 and self.text_task_probability > 0 and not self.roman_piece_slot:
            raise ValueError("--lora_rank 0 trains the projector alone, which the text task (Roman -> native) never "
                             "reaches: set --text_task_probability 0 with it")  # fmt: skip

    def model_options(self) -> dict:
        return {name: getattr(self, name) for name in MODEL_OPTIONS}


class SpeechLLMCollator:
    """Rows of the common schema -> a speech batch (`SpeechCollator`'s, with `languages` and native `targets`), or,
    with probability `text_task_probability`, a text batch of as many (language, Roman, native) sentences drawn
    from `text_pool`, their Roman side misspelt at a rate up to `text_noise` (`misspell`; only `noisy_languages`'
    where given). The draws depend on the seed, the epoch and the batch's first utterance only, so a resumed run
    draws alike. Given `encoder_outputs` ({utterance_id: (T', D)}, `encoder_outputs()`), a speech batch holds the
    frozen encoder's outputs, padded, in place of features."""

    def __init__(self, feature_extractor, text_pool: list[tuple[str, str, str]], text_task_probability: float,
                 seed: int = 0, encoder_outputs: dict | None = None, text_noise: float = 0.0,
                 noisy_languages: set[str] | None = None):  # fmt: skip
        self.speech = SpeechCollator(feature_extractor)
        self.skip_report = self.speech.skip_report
        self.text_pool, self.text_task_probability, self.seed = text_pool, text_task_probability, seed
        self.encoder_outputs, self.text_noise, self.noisy_languages = encoder_outputs, text_noise, noisy_languages
        self.alphabet = sorted({character for _, roman, _ in text_pool for character in roman} - {" "})

    def set_epoch(self, epoch: int) -> None:
        self.speech.set_epoch(epoch)

    def __call__(self, rows: list[dict]) -> dict | None:
        draw = random.Random(f"{self.seed}/{self.speech.epoch}/{rows[0]['utterance_id']}")
        if self.text_pool and draw.random() < self.text_task_probability:
            picks = [self.text_pool[draw.randrange(len(self.text_pool))] for _ in rows]
            languages, romans, natives = map(list, zip(*picks))
            if self.text_noise:
                romans = [misspell(roman, draw.uniform(0.0, self.text_noise), self.alphabet, draw)
                          if self.noisy_languages is None or language in self.noisy_languages else roman
                          for language, roman in zip(languages, romans)]  # fmt: skip
            return {"task": "text", "roman_texts": romans, "languages": languages, "targets": natives}
        if self.encoder_outputs is not None:
            return self.encoded_speech(rows)
        batch = self.speech(rows)
        if batch is None:
            return None
        return batch | {"task": "speech", "languages": batch["language"], "targets": batch["transcript"]}

    def encoded_speech(self, rows: list[dict]) -> dict | None:
        kept = [row for row in rows if row["utterance_id"] in self.encoder_outputs]
        for row in rows:  # their audio did not decode when the encoder ran (counted there too)
            if row["utterance_id"] not in self.encoder_outputs:
                self.skip_report.add("no_encoder_output", row["utterance_id"])
        self.skip_report.num_rows += len(rows)
        if not kept:
            return None
        states = [self.encoder_outputs[row["utterance_id"]] for row in kept]
        return {"task": "speech", "encoder_states": torch.nn.utils.rnn.pad_sequence(states, batch_first=True),
                "encoder_lengths": torch.tensor([len(frames) for frames in states]),  # (B, T', D), (B,)
                "languages": [row["language"] for row in kept], "targets": [row["transcript"] for row in kept],
                "audio_seconds": sum(row["duration"] for row in kept)}  # fmt: skip


def misspell(text: str, rate: float, alphabet: list[str], draw: random.Random) -> str:
    """`text` with each character, with probability `rate`, replaced by one of `alphabet` or a space, dropped, or
    followed by one more: the kinds of error a romanizer makes on speech it does not know (merged and split words
    included), for the text task to read through."""
    written = []
    for character in text:
        if draw.random() >= rate:
            written.append(character)
            continue
        edit = draw.randrange(3)
        if edit == 0:
            written.append(draw.choice(alphabet + [" "]))
        elif edit == 2:
            written.append(character + draw.choice(alphabet))
    return " ".join("".join(written).split())


@torch.no_grad()
def encoder_outputs(model, dataset, max_seconds_per_batch: float, dropout: bool = False) -> dict[str, torch.Tensor]:
    """{utterance_id: (T', D)}: the frozen encoder's outputs for each row of `dataset` whose audio decodes, computed
    once. The encoder is frozen and in eval mode (`dropout`: in train mode, its dropout on, for this pass only) and the
    speech is not augmented, so every epoch would compute the same; the steps then run the projector and the LLM
    alone. Rows that do not decode are counted and logged."""
    outputs = {}
    model.encoder.train(dropout)
    try:
        for batch in speech_batches(model.feature_extractor, dataset, max_seconds_per_batch, name="encoder outputs"):
            encoded = model.encoder(batch["input_features"].to(model.device), attention_mask=batch["attention_mask"])
            for utterance, states, length in zip(batch["utterance_id"], encoded.last_hidden_state,
                                                 encoded.encoder_lengths.tolist()):  # fmt: skip
                outputs[utterance] = states[:length].float().cpu().clone()
    finally:
        model.encoder.eval()
    return outputs


SPEECH_INPUTS = ("roman_texts", "input_features", "attention_mask", "encoder_states", "encoder_lengths")


def unified_loss(model, batch):
    inputs = {name: batch[name] for name in SPEECH_INPUTS if name in batch}
    loss = model(**inputs, languages=batch["languages"], targets=batch["targets"]).loss
    return loss, {f"{batch['task']}_loss": loss.item()}


def dev_metrics(dataset, max_seconds_per_batch: float):
    """Greedy native-script CER on dev speech of the seen languages (the pipeline does the real scoring)."""

    def evaluate(model) -> dict:
        records = transcribe(model, dataset, max_seconds_per_batch)
        return {"cer": jiwer.cer([r["reference"] for r in records], [r["hypothesis"] or " " for r in records])}

    return evaluate


def transcribe(model, dataset, max_seconds_per_batch: float = 120.0, skip_report=None,
               constrain_to_script: bool | None = None) -> list[dict]:  # fmt: skip
    """The unified model's native-script transcripts of `dataset` (transcribe_batches' records); held to each
    language's script or not as `constrain_to_script` says (the model config's choice by default)."""

    def generate(batch: dict) -> list[str]:
        return model.generate(batch["input_features"], batch["attention_mask"], languages=batch["language"],
                              constrain_to_script=constrain_to_script)  # fmt: skip

    return transcribe_batches(generate, model.feature_extractor, dataset, max_seconds_per_batch, skip_report)


def language_names(languages) -> dict:
    """{code: {"name", "script"}} for the prompts."""
    unknown = sorted(set(languages) - set(SCRIPTS))
    if unknown:
        raise ValueError(f"no script is known for language(s) {unknown}; known: {sorted(SCRIPTS)}")
    return {language: {"name": LANGUAGE_NAMES[language], "script": SCRIPTS[language]} for language in languages}


def check_tokenizer(tokenizer, texts, max_byte_fraction: float, name: str) -> dict:
    """Refuses a tokenizer that cannot write the targets: any character that maps to the unknown token, or more
    than `max_byte_fraction` of them spelt only by byte pieces. -> the coverage counts."""
    coverage = character_coverage(tokenizer, texts)
    unknown, byte_split, total = coverage["unknown"], coverage["byte_split"], coverage["characters"]
    if unknown or len(byte_split) > max_byte_fraction * total:
        raise ValueError(
            f"the tokenizer of {name} cannot write the target script: {len(unknown)} of {total} target characters map "
            f"to the unknown token (e.g. {unknown[:5]}) and {len(byte_split)} only to byte pieces (e.g. "
            f"{byte_split[:5]}); allowed: none unknown, at most {max_byte_fraction:.0%} byte-split")  # fmt: skip
    return {"target_characters": total, "unknown_characters": len(unknown), "byte_split_characters": len(byte_split)}


def noisy_languages(args: SpeechLLMArguments, languages) -> set[str]:
    """The languages whose text-task sentences are misspelt: the held-out ones or all, but never a Latin-script
    language, whose Roman text is its native text and the romanizer's own alphabet."""
    noisy = set(args.held_out_languages) if args.text_task_noise_held_out_only else set(languages)
    return noisy - set(PASSTHROUGH_LANGUAGES)


def text_pool(args: SpeechLLMArguments, languages) -> list[tuple[str, str, str]]:
    """(language, Roman, native) sentences of every language from the training-side splits (text only), the
    Latin-script ones with `text_task_latin`, and as many reading drills with `text_task_drills`."""
    pairs = corpus_pairs(load_from_disk(args.corpus), args.romanization_cache)
    sentences, counts = unique_sentences((pair for pair in pairs if pair[0] in languages), args.text_task_latin)
    drills = reading_drills(sentences) if args.text_task_drills else []
    logger.info("text task: %d sentences (%s), %d reading drills", len(sentences), counts, len(drills))
    return sentences + drills


def build_data(args: SpeechLLMArguments):
    """(train speech of the seen languages, dev speech of the seen languages, the text pool, every language: the
    held-out ones included, whose text the pool holds)."""
    corpus_languages = sorted(set(load_splits(args.corpus, [args.train_split])["language"]))
    languages = args.languages or corpus_languages
    missing = sorted(set(args.held_out_languages) - set(languages) | set(languages) - set(corpus_languages))
    if missing:
        raise ValueError(f"language(s) {missing} are not in {args.corpus} (its {args.train_split} split has "
                         f"{corpus_languages}) or not among --languages {languages}")  # fmt: skip
    seen = [language for language in languages if language not in args.held_out_languages]
    if not seen:
        raise ValueError(f"every language is held out ({args.held_out_languages}): no speech is left to train on")
    limits = dict(min_seconds=args.min_seconds, max_seconds=args.max_seconds, require_transcript=True)
    train, _ = clean(load_splits(args.corpus, [args.train_split], seen), "speech_llm/train", **limits)
    dev, _ = clean(load_splits(args.corpus, [args.eval_split], seen), "speech_llm/dev", **limits)
    dev = dev.shuffle(seed=0).select(range(min(args.eval_utterances, len(dev))))
    return train, dev, text_pool(args, languages), languages


def main(argv=None):
    setup_logging()
    args, training = parse_arguments((SpeechLLMArguments, StageArguments), argv)
    set_seed(training.seed)  # before the projector and the adapter are initialised
    train, dev, pool, languages = build_data(args)
    model = SpeechLLMForConditionalGeneration.from_romanizer(
        args.romanizer, args.llm, language_names(languages), **args.model_options())
    coverage = check_tokenizer(model.tokenizer, [*train["transcript"], *(native for _, _, native in pool)],
                               args.max_byte_fraction, args.llm)  # fmt: skip
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    logger.info("unified model: %d trainable parameters (projector + LoRA); %d speech rows of %s; tokenizer %s",
                trainable, len(train), sorted(set(train["language"])), coverage)  # fmt: skip
    cached = None
    if args.cache_encoder_outputs:
        started = time.perf_counter()
        cached = encoder_outputs(model, train, training.max_seconds_per_batch, args.cache_with_dropout)
        logger.info("encoder outputs of %d utterances, %.1f MB, in %.1f s", len(cached),
                    sum(states.numel() for states in cached.values()) * 4 / 2**20, time.perf_counter() - started)
    collator = SpeechLLMCollator(model.feature_extractor, pool, args.text_task_probability, training.seed, cached,
                                 args.text_task_noise, noisy_languages(args, languages))  # fmt: skip
    trainer = StageTrainer(
        training, model, train, collator, unified_loss,
        evaluate=dev_metrics(dev, training.max_seconds_per_batch), stage_name="speech_llm",
        hyperparameters=arguments_to_dict(args),
    )  # fmt: skip
    logger.info("unified model: the LLM's attention: %s", use_fast_attention(model.llm, trainer.precision))
    result = trainer.train()
    trainer.save_final(metrics={
        **result.to_dict(), "train_utterances": len(train), "speech_languages": sorted(set(train["language"])),
        "text_sentences": len(pool), "trainable_parameters": trainable, **coverage,
    })  # fmt: skip
    return result


if __name__ == "__main__":
    main()
