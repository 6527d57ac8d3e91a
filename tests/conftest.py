"""Fixtures shared across test files: one small corpus and one tiny encoder per test session."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory):
    """The `smoke` preset of the embedded corpus in two languages (Hindi and English), written once."""
    from avalign.training.synth import write_corpus

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
