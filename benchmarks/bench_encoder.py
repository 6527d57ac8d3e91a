"""Encoder throughput: avalign's FastConformerModel vs transformers' ParakeetEncoder on identical weights.

Training (forward + backward, train mode) and inference (no grad, eval mode) of the Small preset on a batch of
padded utterances with attention masks, in audio-seconds per second. Also holds what the decoding benchmark shares:
`padded_features` (a random log-mel batch), `timed` (device-synchronised timing) and `goal` (a result row).

    python benchmarks/bench_encoder.py [--quick] [--device cuda]
"""

import argparse

import torch
from _measure import interleaved_times
from transformers.models.parakeet import ParakeetEncoder, ParakeetFeatureExtractor

from avalign.modeling import FastConformerConfig, FastConformerModel

FEATURE_EXTRACTOR = ParakeetFeatureExtractor()
SECONDS_PER_FEATURE_FRAME = FEATURE_EXTRACTOR.hop_length / FEATURE_EXTRACTOR.sampling_rate  # 0.01 s
TARGET_RATIO = 1.0  # avalign must not be slower than the peer


# --------------------------------------------------------------------------------------------------- shared helpers
def padded_features(batch_size: int, min_seconds: float, max_seconds: float, seed: int = 0, device: str = "cpu"):
    """A random log-mel batch: features (B, T, F) zero on padding, attention_mask (B, T) long, lengths (B,) frames.

    Utterance lengths are spread evenly over [min_seconds, max_seconds] (the longest sets T), in shuffled order.
    """
    generator = torch.Generator().manual_seed(seed)
    seconds = torch.linspace(min_seconds, max_seconds, batch_size)[torch.randperm(batch_size, generator=generator)]
    lengths = (seconds / SECONDS_PER_FEATURE_FRAME).long()
    mask = torch.arange(int(lengths.max()))[None] < lengths[:, None]  # (B, T)
    features = torch.randn(batch_size, mask.shape[1], FEATURE_EXTRACTOR.feature_size, generator=generator)
    return (features * mask[..., None]).to(device), mask.long().to(device), lengths.to(device)


def timed(functions: dict, repeats: int, device: str = "cpu", warmup: int = 1) -> dict:
    """`_measure.interleaved_times` of zero-argument callables, each call followed by a device sync (CUDA kernels
    run asynchronously). -> {name: {"wall_s": median, "cpu_s": median}}"""
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    synced = {name: (lambda function=function: (function(), synchronize())) for name, function in functions.items()}
    return interleaved_times(synced, repeats, warmup)


def goal(name: str, times: dict, target: float | None = None, work: float | None = None, unit: str = "s") -> dict:
    """One result row from `timed`'s {"avalign": .., "peer": ..}: the figures (median wall seconds, or `work` done
    per wall second, e.g. audio-s/s), ratio = the peer's time over avalign's (> 1: avalign is faster), the same in
    CPU time, and the target ratio (None: reported without one)."""
    ours, peer = times["avalign"], times["peer"]
    figure = (lambda t: t["wall_s"]) if work is None else (lambda t: work / t["wall_s"])
    ratio = peer["wall_s"] / ours["wall_s"]
    return dict(goal=name, avalign=figure(ours), peer=figure(peer), unit=unit, ratio=ratio,
                cpu_ratio=peer["cpu_s"] / ours["cpu_s"], target=None if target is None else f">= {target:g}x",
                met=None if target is None else ratio >= target)


def print_results(results: dict) -> None:
    print(f"{results['name']} on {results['device']}, {results['threads']} threads: {results['settings']}")
    for key, value in results["checks"].items():
        print(f"  check {key}: {value}")
    for row in results["goals"]:
        verdict = "no target" if row["met"] is None else f"target {row['target']}: {'met' if row['met'] else 'NOT met'}"
        print(f"  {row['goal']}: avalign {row['avalign']:.4g} vs peer {row['peer']:.4g} {row['unit']} -> "
              f"{row['ratio']:.2f}x faster in wall time, {row['cpu_ratio']:.2f}x in CPU time ({verdict})")


# ---------------------------------------------------------------------------------------------------- the benchmark
def build_encoders(preset: str = "small", seed: int = 0, device: str = "cpu", **overrides):
    """avalign's FastConformerModel and transformers' ParakeetEncoder (same config fields) with identical weights."""
    torch.manual_seed(seed)
    ours = FastConformerModel(FastConformerConfig.from_preset(preset, **overrides))
    peer = ParakeetEncoder(ours.to_parakeet_config())
    peer.load_state_dict(ours.state_dict(), strict=True)
    return ours.to(device), peer.to(device)


def max_output_difference(ours, peer, features, mask) -> float:
    """Largest absolute difference of the two encoders' outputs on real frames (eval mode, no grad)."""
    ours.eval(), peer.eval()
    with torch.no_grad():
        ours_outputs = ours(features, attention_mask=mask)
        peer_hidden = peer(features, attention_mask=mask).last_hidden_state
    real = ours_outputs.attention_mask
    return (ours_outputs.last_hidden_state[real] - peer_hidden[real]).abs().max().item()


def inference_step(encoder, features, mask):
    with torch.inference_mode():
        encoder(features, attention_mask=mask)


def training_step(encoder, features, mask):
    encoder.zero_grad(set_to_none=True)
    encoder(features, attention_mask=mask).last_hidden_state.square().mean().backward()


def main(quick: bool = False, device: str = "cpu", threads: int = 2, preset: str = "small") -> dict:
    torch.set_num_threads(threads)
    batch_size, min_seconds, max_seconds = (4, 2.0, 4.0) if quick else (8, 4.0, 10.0)
    repeats = 3 if quick else 7
    ours, peer = build_encoders(preset, device=device)
    features, mask, lengths = padded_features(batch_size, min_seconds, max_seconds, device=device)
    audio_seconds = lengths.sum().item() * SECONDS_PER_FEATURE_FRAME

    results = {"name": "encoder", "device": device, "threads": threads, "goals": [],
               "checks": {"max_abs_output_difference": max_output_difference(ours, peer, features, mask)},
               "settings": dict(preset=preset, batch_size=batch_size, utterance_seconds=[min_seconds, max_seconds],
                                padded_frames=mask.shape[1], audio_seconds=audio_seconds, repeats=repeats)}
    for mode, step in (("inference", inference_step), ("training", training_step)):
        for model in (ours, peer):
            model.train(mode == "training")
        times = timed({"avalign": lambda: step(ours, features, mask), "peer": lambda: step(peer, features, mask)},
                      repeats, device)
        results["goals"].append(goal(f"encoder {mode} throughput ({preset}, B={batch_size})", times, TARGET_RATIO,
                                     work=audio_seconds, unit="audio-s/s"))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batch and fewer repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    print_results(main(quick=arguments.quick, device=arguments.device, threads=arguments.threads))
