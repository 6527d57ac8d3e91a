"""Stage 3: fine-tune a hybrid CTC + TDT head for multilingual ASR on the (small) transcribed set.

    accelerate launch training/train_asr.py --config training/configs/asr_demo.yaml \
        --corpus runs/demo/corpus --init_encoder runs/demo/align --train_fraction 0.25 \
        --output_dir runs/demo/asr/aligned-f0.25

The tokenizer is trained on the transcripts the run may use (the chosen fraction). `--lora_rank R` fine-tunes the
encoder through LoRA adapters (peft) instead of updating all its weights; the adapters are merged before saving, so
the result loads like any other stage-3 model.
"""

import logging
from dataclasses import dataclass, field

import jiwer
import torch
from peft import LoraConfig, get_peft_model
from transformers.models.parakeet import ParakeetProcessor

from accelerate.utils import set_seed

from avalign.modeling import FastConformerCTCTDTConfig, FastConformerForCTCTDT, ctc_greedy_decode, train_tokenizer
from avalign.training.data.batching import DurationBucketSampler, SpeechCollator
from avalign.training.data.splits import clean, feature_extractor, load_splits
from avalign.training.logs import setup_logging
from avalign.training.roman.romanize import with_targets
from avalign.training.trainer import AugmentationArguments, StageArguments, StageTrainer
from avalign.training.trainer import arguments_to_dict, initial_encoder, parse_arguments

logger = logging.getLogger("avalign")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "linear1", "linear2"]  # encoder attention and feed-forward
ASR_HEADS = ["ctc_head", "encoder_projector", "decoder", "joint"]


@dataclass
class ASRArguments:
    corpus: str = field(metadata={"help": "a DatasetDict folder in the common schema with transcripts"})
    init_encoder: str = field(metadata={"help": "stage-2 (aligned) or stage-1 (baseline) output, Parakeet or .nemo"})
    train_split: str = "train"
    eval_split: str = "dev"
    train_fraction: float = field(default=1.0, metadata={"help": "use rows with train_fraction <= this (nested)"})
    languages: list[str] | None = None
    targets: str = field(default="native", metadata={"help": "native: native-script transcripts; roman: uroman"})
    romanization_cache: str | None = field(default=None, metadata={"help": "JSON cache of romanized transcripts"})
    tokenizer: str | None = field(default=None, metadata={"help": "an existing tokenizer; else one is trained"})
    vocab_size: int = field(default=1024, metadata={"help": "upper bound; a small corpus gives fewer ids"})
    roman_vocab_size: int | None = field(default=None, metadata={
        "help": "vocab_size with --targets roman (default: vocab_size): one Latin alphabet needs fewer ids than "
                "several native scripts for the same mix of characters and merges"})  # fmt: skip
    decoder_hidden_size: int = 320
    num_decoder_layers: int = 1
    durations: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    sigma: float = 0.0
    ctc_loss_weight: float = 0.3
    tdt_prune_range: int | None = field(default=None, metadata={
        "help": "None: the exact TDT loss; k >= 2: the pruned loss over k states per frame, in windows the CTC "
                "head's posteriors place (needs ctc_loss_weight > 0)"})  # fmt: skip
    lora_rank: int = field(default=0, metadata={"help": "0: full fine-tuning; > 0: LoRA on the encoder"})
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    min_seconds: float = 0.3
    max_seconds: float = 30.0


def select_fraction(dataset, fraction: float):
    if "train_fraction" not in dataset.column_names:
        if fraction < 1.0:
            raise ValueError("the corpus has no train_fraction column, so only --train_fraction 1.0 is possible")
        return dataset
    return dataset.filter(lambda value: value <= fraction + 1e-9, input_columns="train_fraction")


def build_tokenizer(args: ASRArguments, transcripts: list[str]):
    if args.tokenizer:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(args.tokenizer)
    roman = args.targets == "roman" and args.roman_vocab_size is not None
    tokenizer = train_tokenizer(transcripts, vocab_size=args.roman_vocab_size if roman else args.vocab_size,
                                shrink_to_fit=True)  # fmt: skip
    logger.info("tokenizer: %d ids trained on %d transcripts", len(tokenizer), len(transcripts))
    return tokenizer


def build_model(args: ASRArguments, tokenizer, augmentation: AugmentationArguments) -> FastConformerForCTCTDT:
    encoder = initial_encoder(args.init_encoder)
    config = FastConformerCTCTDTConfig(
        encoder_config=augmentation.encoder_config(encoder.config), vocab_size=len(tokenizer),
        blank_token_id=tokenizer.pad_token_id,
        decoder_hidden_size=args.decoder_hidden_size, num_decoder_layers=args.num_decoder_layers,
        durations=args.durations, sigma=args.sigma, ctc_loss_weight=args.ctc_loss_weight, targets=args.targets,
        tdt_prune_range=args.tdt_prune_range,
    )  # fmt: skip
    model = FastConformerForCTCTDT(config)
    model.load_encoder_state(encoder)
    if args.lora_rank:
        lora = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                          target_modules=LORA_TARGETS, modules_to_save=ASR_HEADS)  # fmt: skip
        model = get_peft_model(model, lora)
        trainable, total = model.get_nb_trainable_parameters()
        logger.info("LoRA rank %d: %d of %d parameters trainable", args.lora_rank, trainable, total)
    return model


def ctc_unfit_utterances(dataset, tokenizer, model, extractor) -> list[str]:
    """Utterances CTC cannot align: more labels (plus a blank between repeated labels) than encoder frames. Their
    CTC loss is zeroed (`zero_infinity`), so they are counted and reported, never dropped silently."""
    samples = torch.tensor(dataset["duration"], dtype=torch.float64) * extractor.sampling_rate
    feature_frames = samples.round().long() // extractor.hop_length
    encoder_frames = model.encoder._get_subsampling_output_length(feature_frames).tolist()
    token_ids = tokenizer(list(dataset["transcript"]))["input_ids"]
    needed = [len(ids) + sum(a == b for a, b in zip(ids, ids[1:])) for ids in token_ids]
    return [utterance for utterance, n, t in zip(dataset["utterance_id"], needed, encoder_frames) if n > t]


def asr_loss(model, batch):
    outputs = model(batch["input_features"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    parts = {"tdt_loss": outputs.tdt_loss, "ctc_loss": outputs.ctc_loss}
    return outputs.loss, {name: loss.item() for name, loss in parts.items() if loss is not None}


def dev_metrics(dataset, collator, tokenizer, max_seconds_per_batch: float):
    """Dev loss and greedy CTC (and, when the transducer trains, TDT) character error rates: a cheap training signal
    (evaluate_asr does the real scoring)."""
    sampler = DurationBucketSampler(dataset["duration"], max_seconds_per_batch, shuffle=False)

    def evaluate(model) -> dict:
        losses, references, hypotheses = [], [], {"ctc": [], "tdt": []}
        with_tdt = model.config.ctc_loss_weight < 1.0
        for indices in sampler:
            rows = [dataset[i] for i in indices]
            batch = collator(rows)
            if batch is None:
                continue
            device = next(model.parameters()).device
            outputs = model(batch["input_features"].to(device), batch["attention_mask"].to(device),
                            labels=batch["labels"].to(device))  # fmt: skip
            losses.append(outputs.loss.item())
            decoded = {"ctc": ctc_greedy_decode(outputs.ctc_logits, outputs.encoder_lengths, tokenizer.pad_token_id)}
            if with_tdt:
                decoded["tdt"] = model.tdt_greedy_decode(outputs.encoder_states, outputs.encoder_lengths)
            for decoding, output in decoded.items():
                hypotheses[decoding] += [tokenizer.decode(ids, group_tokens=False) for ids in output.sequences]
            references += batch["transcript"]
        rates = {f"{decoding}_cer": jiwer.cer(references, texts) for decoding, texts in hypotheses.items() if texts}
        return {"loss": sum(losses) / max(len(losses), 1), **rates}

    return evaluate


def main(argv=None):
    setup_logging()
    args, augmentation, training = parse_arguments((ASRArguments, AugmentationArguments, StageArguments), argv)
    set_seed(training.seed)  # before any weight is initialised
    extractor = feature_extractor()
    limits = dict(min_seconds=args.min_seconds, max_seconds=args.max_seconds, require_transcript=True)
    train = select_fraction(load_splits(args.corpus, [args.train_split], args.languages), args.train_fraction)
    train = with_targets(train, args.targets, args.romanization_cache)
    tokenizer = build_tokenizer(args, train["transcript"])
    # a given tokenizer may not cover every script of the corpus: such rows are counted and skipped
    coverage = tokenizer if args.tokenizer else None
    train, train_report = clean(train, f"asr/train (fraction {args.train_fraction})", tokenizer=coverage, **limits)
    held_out, _ = clean(load_splits(args.corpus, [args.eval_split], args.languages), "asr/dev", **limits)
    held_out = with_targets(held_out, args.targets, args.romanization_cache)
    model = build_model(args, tokenizer, augmentation)
    unfit = ctc_unfit_utterances(train, tokenizer, model, extractor)
    if unfit:
        logger.warning("CTC cannot fit %d of %d training utterances (more labels than encoder frames; their CTC loss "
                       "is zeroed), e.g. %s", len(unfit), len(train), unfit[:3])  # fmt: skip
    trainer = StageTrainer(
        training, model, train,
        SpeechCollator(extractor, tokenizer, augmentation=augmentation.audio_augmentation(training.seed)), asr_loss,
        evaluate=dev_metrics(held_out, SpeechCollator(extractor, tokenizer), tokenizer, training.max_seconds_per_batch),
        stage_name="asr", hyperparameters=arguments_to_dict(args, augmentation),
    )  # fmt: skip
    result = trainer.train()
    if args.lora_rank:
        trainer.model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    # preprocessor_config.json (AutoFeatureExtractor), and the tokenizer with processor_config.json (AutoProcessor)
    trainer.save_final(extractor, ParakeetProcessor(extractor, tokenizer), metrics={
        **result.to_dict(), "train_utterances": len(train), "ctc_unfit_utterances": len(unfit),
        "vocab_size": len(tokenizer),
        "data_skips": dict(train_report.counts),
    })  # fmt: skip
    return result


if __name__ == "__main__":
    main()
