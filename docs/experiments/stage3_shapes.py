"""Issue 21 follow-up: does the demo's stage 3 gain from the faster encoder modules (channels-last subsampling, the
strided relative shift) when every batch has another shape? The benchmarks time one fixed shape; the demo's batches
vary in length. Runs the demo's stage-3 training step (hybrid loss, fp32) over the same
sequence of batch shapes with avalign's modules and with Parakeet's stock ones swapped back in, interleaved.

    OMP_NUM_THREADS=2 .venv/bin/python docs/experiments/stage3_shapes.py [--steps 12]
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers.models.parakeet.modeling_parakeet import ParakeetEncoderAttention, ParakeetEncoderSubsamplingConv2D

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_encoder import padded_features  # noqa: E402
from bench_train_step import DECODER_HIDDEN_SIZE, LABELS, VOCAB_SIZE  # noqa: E402
from _measure import machine  # noqa: E402

from avalign.modeling import FastConformerConfig, FastConformerCTCTDTConfig, FastConformerForCTCTDT  # noqa: E402
from avalign.modeling import modeling_fastconformer  # noqa: E402


def stock_modules():
    """Parakeet's own subsampling and attention for models built inside the block."""
    saved = modeling_fastconformer.ChannelsLastSubsampling, modeling_fastconformer.StridedShiftAttention
    modeling_fastconformer.ChannelsLastSubsampling = ParakeetEncoderSubsamplingConv2D
    modeling_fastconformer.StridedShiftAttention = ParakeetEncoderAttention
    return saved


def batches(count: int, seed: int = 0) -> list[dict]:
    """Demo-like batches: ~30 s of audio each, utterances of 2-6 s, a new padded length every batch."""
    rng, out = torch.Generator().manual_seed(seed), []
    for index in range(count):
        seconds = 2.0 + 4.0 * torch.rand((), generator=rng).item()
        size = max(1, int(30 // seconds))
        features, mask, _ = padded_features(size, 0.6 * seconds, seconds, seed=index)
        labels = torch.randint(0, VOCAB_SIZE - 1, (size, min(LABELS, int(12 * seconds))), generator=rng)
        out.append(dict(input_features=features, attention_mask=mask, labels=labels))
    return out


def training_step(stock: bool):
    """A step function over any batch, of a fresh demo stage-3 model (hybrid loss, fp32), with avalign's encoder
    modules or Parakeet's stock ones."""
    saved = stock_modules() if stock else None
    try:
        torch.manual_seed(0)
        encoder = FastConformerConfig.from_preset("demo")
        config = FastConformerCTCTDTConfig(encoder_config=encoder.to_dict(), vocab_size=VOCAB_SIZE,
                                           decoder_hidden_size=DECODER_HIDDEN_SIZE, ctc_loss_weight=0.5)
        model = FastConformerForCTCTDT(config).train()
    finally:
        if saved:
            modeling_fastconformer.ChannelsLastSubsampling, modeling_fastconformer.StridedShiftAttention = saved
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def step(batch):
        model(batch["input_features"], batch["attention_mask"], labels=batch["labels"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    print(machine(), torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), "threads", flush=True)
    data = batches(args.steps)
    steps = {"avalign": training_step(False), "stock": training_step(True)}
    print({name: type(next(m for m in model.modules() if isinstance(m, ParakeetEncoderSubsamplingConv2D))).__name__
           for name, (model, _) in steps.items()})  # which subsampling each model runs
    totals = {name: [] for name in steps}
    for index, batch in enumerate(data):
        for name, (_, step) in steps.items():
            started = time.perf_counter()
            step(batch)
            totals[name].append(time.perf_counter() - started)
        print(index, tuple(batch["input_features"].shape), {n: round(t[-1], 3) for n, t in totals.items()}, flush=True)
    for name, times in totals.items():
        print(name, "total", round(sum(times[1:]), 2), "s over", len(times) - 1, "steps (the first left out)")
    print("stock / avalign", round(sum(totals["stock"][1:]) / sum(totals["avalign"][1:]), 3))


if __name__ == "__main__":
    main()
