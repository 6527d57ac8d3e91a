"""End to end, waveforms to text: `pipeline("automatic-speech-recognition")` on an avalign stage-3 folder (avalign's
FastConformerASRPipeline: feature extraction, encoder, label-looping greedy TDT) vs the stock transformers pipeline on
the folder's stock export (`to_parakeet_tdt()`, ParakeetForTDT and its `generate`), at batch 8, same weights.

The model is the Small encoder with a 640-wide prediction network, its joint calibrated as in
bench_greedy_decoding.py (a label every ~4 encoder frames); the audio is 16 clips of 4-12 s of noise, decoded in
batches of 8. avalign's texts must equal the stock pipeline's one clip at a time (in a padded batch, stock generate
decodes past a shorter clip's end: the check reports whether its batched texts differ).

    python benchmarks/bench_asr_pipeline.py [--quick] [--threads 2]
"""

import argparse
import tempfile
import warnings

import numpy as np
import torch
from transformers import ParakeetFeatureExtractor, pipeline
from transformers.models.parakeet import ParakeetProcessor
from transformers.utils import logging

from avalign.modeling import train_tokenizer

from bench_encoder import print_results
from bench_greedy_decoding import build_model, calibrate_emissions
from bench_tdt_loss import goal_row
from _measure import interleaved_times, machine

TASK = "automatic-speech-recognition"
TARGET_SPEEDUP = 1.5
RATE = 16000


def synthetic_texts(count: int = 400, seed: int = 0) -> list[str]:
    """Random 'words' of 2-8 lowercase letters: a tokenizer's training text."""
    generator = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return [" ".join("".join(generator.choice(letters, generator.integers(2, 9))) for _ in range(12))
            for _ in range(count)]


def noise_clips(count: int, low_s: float, high_s: float, seed: int = 0) -> list[np.ndarray]:
    generator = np.random.default_rng(seed)
    return [(0.1 * generator.standard_normal(int(seconds * RATE))).astype(np.float32)
            for seconds in np.linspace(low_s, high_s, count)]


def make_folders(root: str, preset: str, decoder_hidden_size: int, clips: list[np.ndarray]) -> tuple[str, str]:
    """A calibrated stage-3 folder and its stock export."""
    tokenizer = train_tokenizer(synthetic_texts(), vocab_size=512, shrink_to_fit=True)
    extractor = ParakeetFeatureExtractor()
    model = build_model(preset, len(tokenizer), decoder_hidden_size)
    inputs = extractor(clips, sampling_rate=RATE, return_attention_mask=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(inputs.input_features, attention_mask=inputs.attention_mask)
    calibrate_emissions(model, outputs.encoder_states, outputs.encoder_lengths)
    ours, stock = f"{root}/stage3", f"{root}/parakeet-tdt"
    processor = ParakeetProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    model.save_pretrained(ours)
    processor.save_pretrained(ours)
    model.to_parakeet_tdt().save_pretrained(stock)
    processor.save_pretrained(stock)
    return ours, stock


def main(quick: bool = False, threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    started_on = machine()
    preset, hidden, count, seconds, batch_size, repeats = (
        ("tiny", 320, 4, (2.0, 4.0), 2, 2) if quick else ("small", 640, 16, (4.0, 12.0), 8, 5))
    clips = noise_clips(count, *seconds)
    with tempfile.TemporaryDirectory() as root:
        ours_folder, stock_folder = make_folders(root, preset, hidden, clips)
        ours = pipeline(TASK, model=ours_folder, trust_remote_code=True)
        stock = pipeline(TASK, model=stock_folder)
        texts = {name: [output["text"] for output in asr(clips, batch_size=batch_size)]
                 for name, asr in (("avalign", ours), ("peer", stock))}
        texts["peer_one_by_one"] = [output["text"] for output in stock(clips, batch_size=1)]
        times = interleaved_times({"avalign": lambda: ours(clips, batch_size=batch_size),
                                   "peer": lambda: stock(clips, batch_size=batch_size)}, repeats, warmup=1)
    audio_seconds = sum(len(clip) for clip in clips) / RATE
    return {
        "name": "asr_pipeline", "device": "cpu", "threads": threads,
        "settings": dict(encoder_preset=preset, decoder_hidden_size=hidden, clips=count, clip_seconds=list(seconds),
                         batch_size=batch_size, audio_seconds=audio_seconds, repeats=repeats,
                         pipelines=dict(avalign=type(ours).__name__, peer=type(stock).__name__),
                         cpu_capability=torch.backends.cpu.get_cpu_capability(), machine=started_on),
        # stock generate decodes past a shorter clip's end inside a padded batch: the reference is one clip at a time
        "checks": dict(identical_to_stock_one_by_one=texts["avalign"] == texts["peer_one_by_one"],
                       stock_batched_equals_stock_one_by_one=texts["peer"] == texts["peer_one_by_one"],
                       characters_per_clip=sum(map(len, texts["avalign"])) / count),
        "goals": [goal_row(f"ASR pipeline end to end, waveforms to text ({preset} encoder, batch {batch_size})",
                           times["avalign"], times["peer"], "s", TARGET_SPEEDUP)],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny encoder, 4 short clips")
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    print_results(main(quick=arguments.quick, threads=arguments.threads))
