"""Greedy TDT decoding: avalign's batched label-looping `tdt_greedy_decode` vs transformers' `ParakeetForTDT.generate`
on the same weights (`FastConformerForCTCTDT.to_parakeet_tdt()`), from precomputed encoder outputs (decoding only)
and end to end (log-mel features -> tokens; feature extraction, identical for both, is left out).

Random weights decode degenerately (a label at every frame, or none), so the joint is given realistic emission
statistics first: each joint output is centred and rescaled to a logit spread of LOGIT_STD over (frame, random label
history) pairs, so that every label and every duration is a priori equally likely; duration 0 is biased far down
(DURATION_BIAS: labels and blanks advance 1-4 frames; emitting at duration 0, and with it `max_symbols_per_step`, is
exercised by `max_symbols_check`), and the blank bias is searched by bisection until one label is emitted every
FRAMES_PER_LABEL encoder frames (0.32 s of audio) on average.

    python benchmarks/bench_greedy_decoding.py [--quick] [--device cuda]
"""

import argparse
import copy
import json
import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from transformers import LogitsProcessor
from transformers.utils import logging

from avalign.modeling import FastConformerConfig, FastConformerCTCTDTConfig, FastConformerForCTCTDT

from bench_encoder import goal, padded_features, print_results, timed

TARGET_SPEEDUP = 5.0  # over transformers' generate
TARGET_NEMO_SPEEDUP = 1.0  # over NeMo's label looping
LOGIT_STD = 2.0
DURATION_BIAS = (-10.0, 0.0, 0.0, 0.0, 0.0)  # durations 0..4: labels and blanks advance 1-4 frames
FRAMES_PER_LABEL = 4.0
PEERS = Path(__file__).parent / "peers"
NEMO_PYTHON = Path(os.environ.get("AVALIGN_NEMO_PYTHON", PEERS / ".venv-nemo" / "bin" / "python"))


class TokensOnly(LogitsProcessor):
    """Stock generate takes one argmax over tokens and durations together: hide the duration logits from it."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, input_ids, scores):
        scores[:, self.vocab_size :] = float("-inf")
        return scores


def build_model(preset: str, vocab_size: int, decoder_hidden_size: int, seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    config = FastConformerCTCTDTConfig(
        encoder_config=FastConformerConfig.from_preset(preset).to_dict(), vocab_size=vocab_size,
        decoder_hidden_size=decoder_hidden_size,
    )
    model = FastConformerForCTCTDT(config)
    with torch.no_grad():  # NeMo's blank is a padding index (a zero embedding): ours too, so one set of weights
        model.decoder.embedding.weight[model.config.blank_token_id] = 0.0  # serves every peer
    return model.to(device).eval()


# ------------------------------------------------------------------------------------ realistic emission statistics
def set_joint_bias(model: FastConformerForCTCTDT, blank_bias: float, duration_bias, centre=None) -> None:
    """Joint output bias: `centre` (V + D,) (zeros if None), plus `blank_bias` on the blank and `duration_bias` (D,)
    on the durations."""
    config, bias = model.config, model.joint.head.bias
    with torch.no_grad():
        bias.copy_(torch.zeros_like(bias) if centre is None else centre)
        bias[config.blank_token_id] += blank_bias
        bias[config.vocab_size :] += torch.as_tensor(duration_bias, dtype=bias.dtype, device=bias.device)


def frames_per_label(model: FastConformerForCTCTDT, encoder_states, encoder_lengths) -> float:
    labels = sum(len(tokens) for tokens in model.tdt_greedy_decode(encoder_states, encoder_lengths).sequences)
    return encoder_lengths.sum().item() / max(labels, 1)


def calibrate_emissions(model, encoder_states, encoder_lengths, target=FRAMES_PER_LABEL, steps=8) -> dict:
    """Centre each joint output and rescale the joint's weights to a logit spread of LOGIT_STD over (frame, label
    history) pairs, so that every label and duration is a priori equally likely; bias duration 0 down, then bisect the
    blank bias until a label is emitted every `target` frames. -> the settings found and the statistics reached."""
    head, (batch_size, max_time, _) = model.joint.head, encoder_states.shape
    generator = torch.Generator().manual_seed(0)
    histories = torch.randint(0, model.config.blank_token_id, (batch_size, max_time // 4), generator=generator)
    histories = torch.cat([torch.full_like(histories[:, :1], model.config.blank_token_id), histories], 1)
    pick = torch.randint(0, histories.shape[1], (batch_size, max_time), generator=generator)
    real = torch.arange(max_time)[None] < encoder_lengths.cpu()[:, None]  # (B, T')
    with torch.no_grad():
        decoder_states, _ = model.prediction_network(histories.to(encoder_states.device))  # (B, U + 1, H)
        paired = decoder_states[torch.arange(batch_size)[:, None], pick.to(encoder_states.device)]  # (B, T', H)
        logits = model.joint(paired, encoder_states)[real.to(encoder_states.device)] - head.bias  # (frames, V + D)
        scale = LOGIT_STD / (logits - logits.mean(0)).std()
        head.weight.mul_(scale)
        centre = -logits.mean(0) * scale
    low, high = -4 * LOGIT_STD, 8 * LOGIT_STD  # frames per label grows with the blank bias
    for _ in range(steps):
        blank_bias = (low + high) / 2
        set_joint_bias(model, blank_bias, DURATION_BIAS, centre)
        too_few_labels = frames_per_label(model, encoder_states, encoder_lengths) > target
        low, high = (low, blank_bias) if too_few_labels else (blank_bias, high)
    decoded = model.tdt_greedy_decode(encoder_states, encoder_lengths)
    durations = torch.tensor([d for row in decoded.token_durations for d in row]).bincount(minlength=len(DURATION_BIAS))
    return dict(logit_std=LOGIT_STD, duration_bias=list(DURATION_BIAS), blank_bias=round(blank_bias, 4),
                frames_per_label=frames_per_label(model, encoder_states, encoder_lengths),
                label_duration_counts=durations.tolist())


# ------------------------------------------------------------------------------------------------ transformers' side
def stock_generate(tdt, features, mask, encoder_outputs=None):
    """`ParakeetForTDT.generate`; given `encoder_outputs` (from `tdt.get_audio_features`) the encoder is skipped."""
    if encoder_outputs is not None:
        tdt.get_audio_features = lambda **kwargs: encoder_outputs  # generate always encodes: hand it the result
    try:
        tokens_only = TokensOnly(tdt.config.vocab_size)
        return tdt.generate(input_features=features, attention_mask=mask, logits_processor=[tokens_only])
    finally:
        if encoder_outputs is not None:
            del tdt.get_audio_features


def stock_transcripts(generated, encoder_lengths: torch.Tensor, blank_token_id: int) -> dict:
    """Per utterance from generate's output: labels, the encoder frame each was emitted at, and the joint
    evaluations (steps taken before the utterance ran out of frames; later steps are padding)."""
    steps, durations = generated.sequences[:, 1:], generated.durations[:, 1:]  # drop the decoder start token
    frames = durations.cumsum(1) - durations  # (B, steps) the frame each step looked at
    active = frames < encoder_lengths[:, None]
    emitted = active & (steps != blank_token_id)
    return dict(sequences=[row[keep].tolist() for row, keep in zip(steps, emitted)],
                frame_timestamps=[row[keep].tolist() for row, keep in zip(frames, emitted)],
                joint_evaluations=active.sum(1).tolist(), decoding_steps=steps.shape[1])


def max_labels_on_one_frame(frame_timestamps: list[list[int]]) -> int:
    return max((frames.count(frame) for frames in frame_timestamps for frame in set(frames)), default=0)


# ------------------------------------------------------------------------------------------------------ NeMo's side
def nemo_label_looping(model, encoder_states, encoder_lengths, repeats: int, threads: int) -> dict:
    """NeMo's `GreedyBatchedTDTInfer` (label looping, torch implementation) on the same weights and encoder states, in
    NeMo's own environment (peers/make_nemo_env.sh) through peers/nemo_greedy_tdt.py. -> its labels, timestamps and
    times, or {"missing": why} where the environment is not there."""
    if not NEMO_PYTHON.exists():
        return dict(missing=f"{NEMO_PYTHON} not found: run benchmarks/peers/make_nemo_env.sh")
    config = model.config
    inputs = dict(decoder=model.decoder.state_dict(), joint=model.joint.state_dict(), vocab_size=config.vocab_size,
                  hidden_size=config.decoder_hidden_size, num_layers=config.num_decoder_layers,
                  activation=config.hidden_act, durations=list(config.durations),
                  max_symbols_per_step=config.max_symbols_per_step, encoder_states=encoder_states.cpu(),
                  encoder_lengths=encoder_lengths.cpu(), threads=threads, repeats=repeats)
    with tempfile.TemporaryDirectory() as folder:
        torch.save(inputs, f"{folder}/inputs.pt")
        run = subprocess.run([str(NEMO_PYTHON), str(PEERS / "nemo_greedy_tdt.py"), f"{folder}/inputs.pt",
                              f"{folder}/outputs.json"], capture_output=True, text=True)
        if run.returncode:
            return dict(missing=f"nemo_greedy_tdt.py failed: {run.stderr.strip()[-1500:]}")
        return json.loads(Path(f"{folder}/outputs.json").read_text())


# -------------------------------------------------------------------------------------------------------- checks
def compare_outputs(model, tdt, features, mask, encoder_states, encoder_lengths, encoder_outputs=None) -> dict:
    """Decode with both; identical labels and timestamps per utterance?"""
    ours = model.tdt_greedy_decode(encoder_states, encoder_lengths)
    stock = stock_transcripts(stock_generate(tdt, features, mask, encoder_outputs), encoder_lengths,
                              model.config.blank_token_id)
    return dict(
        identical_tokens=ours.sequences == stock["sequences"],
        identical_timestamps=ours.frame_timestamps == stock["frame_timestamps"],
        labels_per_utterance=sum(map(len, ours.sequences)) / len(ours.sequences),
        labels_per_utterance_range=[min(map(len, ours.sequences)), max(map(len, ours.sequences))],
        joint_evaluations_per_utterance=dict(avalign=ours.joint_evaluations.float().mean().item(),
                                             peer=sum(stock["joint_evaluations"]) / len(ours.sequences)),
        peer_batched_decoding_steps=stock["decoding_steps"],
        max_labels_on_one_frame=dict(avalign=max_labels_on_one_frame(ours.frame_timestamps),
                                     peer=max_labels_on_one_frame(stock["frame_timestamps"])),
    )


def max_symbols_check(model, features, mask) -> dict:
    """A degenerate joint that always emits a label of duration 0 (a copy of `model`): avalign forces a frame
    advance after `max_symbols_per_step` labels on one frame; stock TDT generate has no per-frame cap and only stops
    at its length limit (max_symbols_per_step x encoder frames), never leaving frame 0."""
    stuck = copy.deepcopy(model)
    set_joint_bias(stuck, blank_bias=-1e4, duration_bias=[1e4] + [0.0] * (len(model.config.durations) - 1))
    with torch.no_grad():
        stuck.joint.head.bias[0] = 1e4  # always label 0
        outputs = stuck(features, attention_mask=mask)
    ours = stuck.tdt_greedy_decode(outputs.encoder_states, outputs.encoder_lengths)
    stock = stock_transcripts(stock_generate(stuck.to_parakeet_tdt(), features, mask), outputs.encoder_lengths,
                              model.config.blank_token_id)
    summary = lambda timestamps: dict(labels=[len(t) for t in timestamps],  # noqa: E731
                                      last_frame=[max(t, default=-1) for t in timestamps],
                                      max_labels_on_one_frame=max_labels_on_one_frame(timestamps))
    return dict(max_symbols_per_step=model.config.max_symbols_per_step,
                encoder_frames=outputs.encoder_lengths.tolist(),
                avalign=summary(ours.frame_timestamps), peer=summary(stock["frame_timestamps"]))


# ---------------------------------------------------------------------------------------------------- the benchmark
def main(quick: bool = False, device: str = "cpu", threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    logging.set_verbosity_error()  # generate warns about its length settings on every call
    warnings.filterwarnings("ignore", message="Using the model-agnostic default `max_length`")
    preset, batch_size, seconds = ("tiny", 4, (2.0, 4.0)) if quick else ("small", 16, (4.0, 12.0))
    vocab_size, decoder_hidden_size, repeats = 1025, (320 if quick else 640), (3 if quick else 7)
    model = build_model(preset, vocab_size, decoder_hidden_size, device=device)
    features, mask, _ = padded_features(batch_size, *seconds, device=device)
    with torch.no_grad():
        outputs = model(features, attention_mask=mask)
    states, lengths = outputs.encoder_states, outputs.encoder_lengths
    emissions = calibrate_emissions(model, states, lengths)

    tdt = model.to_parakeet_tdt()
    with torch.no_grad():
        encoder_outputs = tdt.get_audio_features(input_features=features, attention_mask=mask, output_attention_mask=True)
    checks = dict(decoding_only=compare_outputs(model, tdt, features, mask, states, lengths, encoder_outputs),
                  end_to_end=compare_outputs(model, tdt, features, mask, states, lengths),
                  max_symbols=max_symbols_check(model, features[:2, :200], mask[:2, :200]))

    decoding = timed({"avalign": lambda: model.tdt_greedy_decode(states, lengths),
                      "peer": lambda: stock_generate(tdt, features, mask, encoder_outputs)}, repeats, device)
    end_to_end = timed({"avalign": lambda: model.transcribe(features, mask),
                        "peer": lambda: stock_generate(tdt, features, mask)}, repeats, device)
    goals = [goal(f"TDT greedy decoding, decoding only (B={batch_size})", decoding, TARGET_SPEEDUP),
             goal(f"TDT greedy decoding, end to end with the {preset} encoder (B={batch_size})", end_to_end)]
    nemo = nemo_label_looping(model, states, lengths, repeats, threads) if device == "cpu" else dict(missing="CPU only")
    if "missing" not in nemo:
        ours = model.tdt_greedy_decode(states, lengths)
        checks["nemo"] = dict(identical_tokens=ours.sequences == nemo["sequences"],
                              identical_timestamps=ours.frame_timestamps == nemo["frame_timestamps"],
                              nemo_version=nemo["nemo_version"], torch_version=nemo["torch_version"],
                              timing="NeMo in its own process, median of the same number of repeats after a warm-up")
        goals.insert(1, goal(f"TDT greedy decoding, decoding only, vs NeMo label looping (B={batch_size})",
                             dict(avalign=decoding["avalign"], peer=nemo), TARGET_NEMO_SPEEDUP))
    else:
        checks["nemo"] = nemo
    return {
        "name": "greedy_decoding", "device": device, "threads": threads,
        "settings": dict(encoder_preset=preset, batch_size=batch_size, utterance_seconds=list(seconds),
                         encoder_frames=[lengths.min().item(), lengths.max().item()], vocab_size=vocab_size,
                         decoder_hidden_size=decoder_hidden_size, durations=model.config.durations,
                         repeats=repeats, emissions=emissions),
        "checks": checks,
        "goals": goals,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny encoder, small batch, fewer repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    print_results(main(quick=arguments.quick, device=arguments.device, threads=arguments.threads))
