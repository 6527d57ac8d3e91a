"""`mixed_precision: auto` and the warning for an explicit bf16 that the CPU only emulates (capabilities faked)."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from avalign.training import precision
from avalign.training.trainer import StageArguments, parse_arguments

REPO = Path(__file__).resolve().parents[1]


def fake_cpu(monkeypatch, flags: str, slowdown: float, isa_cap: str | None = None):
    monkeypatch.setattr(precision, "_cpuinfo_field", lambda name: flags if name == "flags" else "Fake CPU 9000")
    monkeypatch.setattr(precision, "bf16_slowdown", lambda: slowdown)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if isa_cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa_cap)


AMX_CPU = "fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile"
AVX2_CPU = "fpu sse avx avx2 fma"


def test_auto_picks_bf16_on_a_cpu_with_native_bf16(monkeypatch):
    fake_cpu(monkeypatch, AMX_CPU, slowdown=0.4)
    choice = precision.choose_precision("auto", "cpu")
    assert (choice.precision, choice.accelerate_name) == ("bf16", "bf16")
    assert "amx_bf16" in choice.reason and "native bf16" in choice.reason and choice.cpu_model == "Fake CPU 9000"


def test_auto_picks_fp32_on_an_avx2_cpu(monkeypatch):
    fake_cpu(monkeypatch, AVX2_CPU, slowdown=70.0)
    choice = precision.choose_precision("auto", "cpu")
    assert (choice.precision, choice.accelerate_name) == ("fp32", "no")
    assert "no native bf16" in choice.reason and choice.bf16_slowdown == 70.0


def test_auto_trusts_the_probe_over_the_flags(monkeypatch):
    # flags claim bf16, the kernels emulate it (a capped ISA, a VM that hides AMX state)
    fake_cpu(monkeypatch, AMX_CPU, slowdown=60.0)
    assert precision.choose_precision("auto", "cpu").precision == "fp32"


def test_an_onednn_isa_cap_turns_native_bf16_off(monkeypatch):
    fake_cpu(monkeypatch, AMX_CPU, slowdown=0.4, isa_cap="avx2")
    native, why = precision.cpu_native_bf16()
    assert not native and "ONEDNN_MAX_CPU_ISA=AVX2" in why
    assert precision.choose_precision("auto", "cpu").precision == "fp32"


def test_explicit_bf16_on_an_emulating_cpu_runs_with_a_warning_naming_the_slowdown(monkeypatch, caplog):
    fake_cpu(monkeypatch, AVX2_CPU, slowdown=71.0)
    with caplog.at_level(logging.WARNING, logger="avalign"):
        choice = precision.choose_precision("bf16", "cpu")
    assert choice.precision == "bf16"
    assert "71x slower" in caplog.text and "mixed_precision: auto" in caplog.text


def test_explicit_bf16_on_a_native_cpu_does_not_warn(monkeypatch, caplog):
    fake_cpu(monkeypatch, AMX_CPU, slowdown=0.4)
    with caplog.at_level(logging.WARNING, logger="avalign"):
        assert precision.choose_precision("bf16", "cpu").precision == "bf16"
    assert caplog.text == ""


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_picks_bf16_where_supported_else_fp16(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    choice = precision.choose_precision("auto", "cuda")
    assert choice.precision == expected and choice.accelerate_name == expected


@pytest.mark.parametrize("requested, expected", [("no", "fp32"), ("fp32", "fp32"), ("fp16", "fp16")])
def test_explicit_choices_are_kept(monkeypatch, requested, expected):
    fake_cpu(monkeypatch, AMX_CPU, slowdown=0.4)
    assert precision.choose_precision(requested, "cpu").precision == expected


def test_an_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="--mixed_precision must be one of"):
        StageArguments(output_dir="x", mixed_precision="bfloat16")


def test_the_probe_measures_a_positive_ratio():
    assert precision.bf16_slowdown(size=32, repeats=1) > 0


def test_auto_is_the_default_and_every_shipped_config_says_auto():
    assert StageArguments(output_dir="x").mixed_precision == "auto"
    for config in sorted((REPO / "training" / "configs").glob("*.yaml")):
        assert yaml.safe_load(config.read_text()).get("mixed_precision", "auto") == "auto", config.name


def test_a_config_that_says_auto_parses(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: out\nmixed_precision: auto  # a comment\n")
    (training,) = parse_arguments((StageArguments,), ["--config", str(config)])
    assert training.mixed_precision == "auto"


def test_auto_is_fp32_when_the_native_kernels_are_forced_off():
    """The real probe and flags, not faked: with oneDNN capped at AVX2 (as on an AVX2-only CPU) auto must pick fp32."""
    code = "import json; from avalign.training.precision import choose_precision as c; print(json.dumps(c('auto', 'cpu').to_dict()))"
    environment = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    completed = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    choice = json.loads(completed.stdout.strip().splitlines()[-1])
    assert choice["precision"] == "fp32" and choice["cpu_capability"] == "AVX2", choice


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))  # fmt: skip


@pytest.mark.parametrize("device, chosen, expected", [("cpu", "bf16", "eager"), ("cpu", "fp32", "sdpa"),
                                                      ("cuda", "bf16", "sdpa")])  # fmt: skip
def test_fast_attention_is_eager_only_for_bf16_on_a_cpu(device, chosen, expected, tmp_path):
    model = tiny_llama()
    choice = precision.PrecisionChoice("auto", chosen, "faked", device, "Fake CPU 9000", "AVX512")
    ids = torch.randint(0, 50, (2, 7))
    before = model(ids).logits
    assert precision.use_fast_attention(model, choice) == expected == model.config._attn_implementation
    torch.testing.assert_close(model(ids).logits, before)  # the same function, another kernel
    model.save_pretrained(tmp_path)
    assert type(model).from_pretrained(tmp_path).config._attn_implementation == "sdpa"  # not saved with the model
