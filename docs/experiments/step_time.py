"""Seconds per stage-3 training step (hybrid loss, 60 s batches of EXP/corpus4) for the levers of finding 2: encoder
size and subsampling, CTC weight, bf16 autocast, threads, torch.compile. Mean of batches 2-6 after the first."""
import os
import sys
import time

import torch

from avalign.modeling import FastConformerConfig, FastConformerCTCTDTConfig, FastConformerForCTCTDT, train_tokenizer
from avalign.training.data.batching import DurationBucketSampler, SpeechCollator
from avalign.training.data.splits import feature_extractor, load_splits

rows = load_splits(os.path.join(os.environ.get("EXP", "runs/exp"), "corpus4"), ["train"])
tokenizer = train_tokenizer(rows["transcript"], vocab_size=450, shrink_to_fit=True)
collator = SpeechCollator(feature_extractor(), tokenizer)
batches = [collator([rows[i] for i in batch]) for batch in DurationBucketSampler(rows["duration"], 60, seed=0).epoch_batches()[:6]]


def step_seconds(encoder_overrides=None, ctc_loss_weight=0.5, bf16=True, threads=2, compile_encoder=False):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    encoder = FastConformerConfig.from_preset("demo", **{"subsampling_factor": 4, **(encoder_overrides or {})})
    config = FastConformerCTCTDTConfig(encoder_config=encoder.to_dict(), vocab_size=len(tokenizer),
                                       blank_token_id=tokenizer.pad_token_id, decoder_hidden_size=160,
                                       ctc_loss_weight=ctc_loss_weight)  # fmt: skip
    model = FastConformerForCTCTDT(config).train()
    if compile_encoder:
        model.encoder = torch.compile(model.encoder, dynamic=True)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    times = []
    for batch in batches:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(batch["input_features"], batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times[0], sum(times[1:]) / len(times[1:])


VARIANTS = {
    "4x, hybrid, bf16, 2 threads (the demo)": {},
    "8x subsampling": dict(encoder_overrides={"subsampling_factor": 8}),
    "4 layers": dict(encoder_overrides={"num_hidden_layers": 4}),
    "CTC only (TDT not computed)": dict(ctc_loss_weight=1.0),
    "fp32": dict(bf16=False),
    "1 thread": dict(threads=1),
    "torch.compile(encoder, dynamic=True)": dict(compile_encoder=True),
}
for name in sys.argv[1:] or VARIANTS:
    first, steady = step_seconds(**VARIANTS[name])
    print(f"{name}: first step {first:.2f} s, then {steady:.2f} s / step", flush=True)
