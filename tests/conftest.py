"""Fixtures shared across test files: one small corpus and one tiny encoder per test session."""

import os
import subprocess
import sys
import textwrap

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


NO_AVALIGN = """
import importlib.abc, sys
class NoAvalign(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "avalign" or name.startswith("avalign."):
            raise ImportError("avalign is not installed here")
sys.meta_path.insert(0, NoAvalign())
"""


@pytest.fixture(scope="session")
def run_without_avalign(tmp_path_factory):
    """`run(script, *arguments)`: the script in a fresh offline process where avalign cannot be imported (as on a
    machine without it), with an empty Hugging Face cache; returns its stdout, fails the test on a non-zero exit."""

    def run(script: str, *arguments) -> str:
        env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path_factory.mktemp("hf-home")), "PATH": "/usr/bin:/bin"}
        command = [sys.executable, "-c", NO_AVALIGN + textwrap.dedent(script), *map(str, arguments)]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    return run


@pytest.fixture(scope="session")
def kill_at_checkpoint():
    """`kill(command, output_dir, step)`: starts a training command, SIGKILLs it once its step-`step` checkpoint is
    written, and checks that it had not finished (else a resume would test nothing)."""
    import signal
    import time
    from pathlib import Path

    def kill(command: list[str], output_dir: Path, step: int = 3) -> None:
        process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.time() + 300
        while not (output_dir / "checkpoints" / f"step-{step:08d}").exists():
            assert process.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert not (output_dir / "model.safetensors").exists(), "the kill came too late to test anything"

    return kill


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory):
    """The `smoke` preset of the embedded corpus in two languages (Hindi and English), written once."""
    from avalign.training.corpus.synth import write_corpus

    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder, preset="smoke", languages=("hi", "en"), progress=False)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A randomly initialised tiny FastConformer encoder saved as a checkpoint folder (a stage's starting point)."""
    import torch

    from avalign.modeling import FastConformerConfig, FastConformerModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-encoder")
    FastConformerModel(FastConformerConfig.from_preset("tiny")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def trained_asr_dir(smoke_corpus, tmp_path_factory):
    """A tiny stage-3 folder (model, feature extractor, processor) fitted to four corpus clips until greedy TDT and
    CTC each emit at least half the tokens of every clip: an untrained model emits only blanks (or a label per frame)
    and hides decoding bugs.
    Returns (folder, [(samples (T,), transcript)] of the four clips)."""
    import io

    import soundfile
    import torch
    from datasets import load_from_disk
    from transformers import ParakeetFeatureExtractor
    from transformers.models.parakeet import ParakeetProcessor

    from avalign.modeling import FastConformerConfig, FastConformerCTCTDTConfig, FastConformerForCTCTDT, train_tokenizer

    rows = load_from_disk(str(smoke_corpus))["train"].select(range(4))
    clips = [(soundfile.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")[0], row["transcript"]) for row in rows]
    tokenizer = train_tokenizer([text for _, text in clips], vocab_size=300, shrink_to_fit=True)
    extractor = ParakeetFeatureExtractor()
    torch.manual_seed(0)
    encoder = FastConformerConfig.from_preset("tiny", subsampling_factor=4, dropout=0.0, attention_dropout=0.0,
                                              activation_dropout=0.0).to_dict()  # fmt: skip
    config = FastConformerCTCTDTConfig(encoder_config=encoder, vocab_size=len(tokenizer), decoder_hidden_size=32,
                                       ctc_loss_weight=0.5)  # fmt: skip
    model = FastConformerForCTCTDT(config)
    inputs = extractor([samples for samples, _ in clips], sampling_rate=16000, return_attention_mask=True,
                       return_tensors="pt")  # fmt: skip
    targets = [tokenizer.encode(text, add_special_tokens=False) for _, text in clips]
    labels = torch.full((len(targets), max(map(len, targets))), -100)
    for row, ids in enumerate(targets):
        labels[row, : len(ids)] = torch.tensor(ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(600):
        model.train()
        loss = model(inputs.input_features, inputs.attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 24:
            model.eval()
            decoded = [model.transcribe(inputs.input_features, inputs.attention_mask, decoding=decoding).sequences
                       for decoding in ("tdt", "ctc")]  # fmt: skip
            if all(half_right(ids, target) for sequences in decoded for ids, target in zip(sequences, targets)):
                break
    else:
        raise AssertionError(f"the tiny model did not learn its four clips in 600 steps (loss {loss.item():.3f})")
    folder = tmp_path_factory.mktemp("trained-asr")
    model.eval().save_pretrained(folder)
    extractor.save_pretrained(folder)
    ParakeetProcessor(extractor, tokenizer).save_pretrained(folder)
    return folder, clips


def half_right(ids: list[int], target: list[int]) -> bool:
    """At least half the target's tokens emitted, and not more than twice as many tokens as the target has."""
    from collections import Counter

    return 2 * (Counter(ids) & Counter(target)).total() >= len(target) and len(ids) <= 2 * len(target)


@pytest.fixture(scope="session")
def unified_model_dir(tmp_path_factory):
    """A tiny unified model folder (Zero-AVSR's speech -> LLM -> native script) for Hindi, untrained: a random
    roman-target stage-3 romanizer, a text LM trained for 5 steps, a fresh projector and LoRA adapter.
    Returns (folder, the base LLM folder it names)."""
    import torch
    from transformers import ParakeetFeatureExtractor
    from transformers.models.parakeet import ParakeetProcessor

    from avalign.modeling import (
        FastConformerConfig,
        FastConformerCTCTDTConfig,
        FastConformerForCTCTDT,
        SpeechLLMForConditionalGeneration,
        train_tokenizer,
    )
    from avalign.training.text_lm import TextLMConfig, train_text_lm

    torch.manual_seed(0)
    romanizer, lm, folder = (tmp_path_factory.mktemp(name) for name in ("romanizer", "text-lm", "unified"))
    roman = ["ek laal gend", "do neele ghar", "teen hare ped", "char peele phool"]
    tokenizer = train_tokenizer(roman, vocab_size=300, shrink_to_fit=True)
    config = FastConformerCTCTDTConfig(encoder_config=FastConformerConfig.from_preset("tiny").to_dict(),
                                       vocab_size=len(tokenizer), decoder_hidden_size=32, targets="roman")  # fmt: skip
    FastConformerForCTCTDT(config).save_pretrained(romanizer)
    ParakeetProcessor(ParakeetFeatureExtractor(), tokenizer).save_pretrained(romanizer)
    train_text_lm(["एक लाल गेंद", "दो नीले घर", "तीन हरे पेड़", "चार पीले फूल"], lm, steps=5,
                  config=TextLMConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=300))
    model = SpeechLLMForConditionalGeneration.from_romanizer(
        romanizer, lm, {"hi": {"name": "Hindi", "script": "Devanagari"}}, lora_rank=4, projector_hidden_size=16,
        max_new_tokens=8,
    )  # fmt: skip
    model.save_pretrained(folder)
    return folder, lm
