"""`mixed_precision: auto`: bf16 only where the device runs it natively, fp16 on a CUDA GPU without bf16, else fp32.

On a CPU without AVX512_BF16 or AMX, bf16 matrix products are emulated and run ~70x slower than fp32 (issue 18).
The choice rests on two readings, both reported:

- the CPU's flags (`/proc/cpuinfo`: avx512_bf16, amx_bf16), capped by oneDNN's `ONEDNN_MAX_CPU_ISA` when it is set;
- a ~50 ms probe: one thread, the same matrix product in fp32 and in bf16. Flags can claim what the kernels do not
  deliver (an ISA cap, a virtual machine that hides AMX state): bf16 is chosen only when the probe agrees.

    choice = choose_precision("auto")   # PrecisionChoice(precision="bf16", reason="auto: CPU with AMX ...", ...)
    Accelerator(mixed_precision=choice.accelerate_name)
    use_fast_attention(llm, choice)     # a causal LM trained in bf16 on a CPU: eager attention, not sdpa
"""

import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

logger = logging.getLogger("avalign")
CHOICES = ("auto", "no", "fp32", "bf16", "fp16")
NATIVE_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # the two ways a CPU multiplies bf16 in hardware
MAX_NATIVE_SLOWDOWN = 1.5  # bf16 / fp32 probe time: native kernels run bf16 at least about as fast as fp32
# oneDNN ISA names below which its bf16 kernels are emulated (ONEDNN_MAX_CPU_ISA caps the ISA it dispatches to)
ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


@dataclass(frozen=True)
class PrecisionChoice:
    requested: str  # what the config asked for
    precision: str  # what runs: "bf16", "fp16" or "fp32"
    reason: str
    device: str  # "cpu" or "cuda"
    cpu_model: str
    cpu_capability: str  # torch.backends.cpu.get_cpu_capability()
    bf16_slowdown: float | None = None  # the probe's bf16 / fp32 time (CPU only)

    @property
    def accelerate_name(self) -> str:
        return "no" if self.precision == "fp32" else self.precision

    def to_dict(self) -> dict:
        return asdict(self)


def choose_precision(requested: str, device: str | None = None) -> PrecisionChoice:
    """What `requested` ("auto", "no"/"fp32", "bf16", "fp16") means on `device` (default: CUDA if present, else CPU).
    An explicit bf16 on hardware that only emulates it still runs, with a warning naming the measured slowdown."""
    if requested not in CHOICES:
        raise ValueError(f"--mixed_precision must be one of {', '.join(CHOICES)}, got {requested!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    machine = {"device": device, "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if device == "cuda":
        return _cuda_choice(requested, machine)
    if device != "cpu":
        precision = "fp32" if requested in ("auto", "no") else requested
        return PrecisionChoice(requested, precision, f"{requested} on {device}", **machine)
    if requested in ("no", "fp32", "fp16"):
        return PrecisionChoice(requested, "fp32" if requested == "no" else requested, "as configured", **machine)
    native, flags = cpu_native_bf16()
    slowdown = bf16_slowdown()
    fast = native and slowdown <= MAX_NATIVE_SLOWDOWN
    readings = f"CPU capability {machine['cpu_capability']}, {flags}, bf16 probe {slowdown:.1f}x fp32 time"
    if requested == "bf16":
        if not fast:
            logger.warning("mixed precision bf16 was asked for, but this CPU emulates it (%s): training runs about "
                           "%.0fx slower than fp32 in matrix products. Set `mixed_precision: auto` (or "
                           "--mixed_precision auto) to pick the fastest precision.", readings, slowdown)  # fmt: skip
        return PrecisionChoice(requested, "bf16", f"as configured ({readings})", bf16_slowdown=slowdown, **machine)
    precision = "bf16" if fast else "fp32"
    verdict = "native bf16" if fast else "no native bf16"
    return PrecisionChoice(requested, precision, f"auto: {readings}: {verdict}", bf16_slowdown=slowdown, **machine)


def _cuda_choice(requested: str, machine: dict) -> PrecisionChoice:
    supported = torch.cuda.is_bf16_supported()
    if requested == "auto":
        precision = "bf16" if supported else "fp16"  # accelerate scales the fp16 loss
        reason = "auto: CUDA GPU with bf16" if supported else "auto: CUDA GPU without bf16: fp16 with loss scaling"
        return PrecisionChoice(requested, precision, reason, **machine)
    if requested == "bf16" and not supported:
        logger.warning("mixed precision bf16 was asked for on a GPU without bf16 support; set `mixed_precision: "
                       "auto` to use fp16 with loss scaling")  # fmt: skip
    return PrecisionChoice(requested, "fp32" if requested == "no" else requested, "as configured", **machine)


def autocast(choice: PrecisionChoice):
    """The autocast context of a CPU training loop that runs without accelerate: bf16 where `choice` is bf16, else
    none (fp16 needs the loss scaling that accelerate gives the other stages)."""
    return torch.autocast(choice.device, dtype=torch.bfloat16, enabled=choice.precision == "bf16")


def use_fast_attention(model, choice: PrecisionChoice) -> str:
    """Sets the fastest attention for training a transformers model at `choice` -> the implementation it now has.
    torch's CPU sdpa kernel (flash attention) runs causal attention's forward + backward ~5x slower in bf16 than in
    fp32 (torch 2.13: (32, 4, 48, 48), 18 against 3.8 ms on one thread), while eager attention in bf16 takes 3.6 ms:
    with eager attention under CPU bf16 the demo text LM's training step is 1.4x faster than with sdpa in bf16 and 1.5x
    faster than fp32 (benchmarks/bench_precision.py, "text LM"; 2-core AMX Xeon).
    Elsewhere the model keeps the implementation it loaded with. The choice is not saved with the model."""
    if choice.device == "cpu" and choice.precision == "bf16":
        model.set_attn_implementation("eager")
    return model.config._attn_implementation


def cpu_native_bf16() -> tuple[bool, str]:
    """(True when the CPU multiplies bf16 in hardware and oneDNN may use it, a description of why)."""
    flags = set(_cpuinfo_field("flags").split())
    native = [flag for flag in NATIVE_CPU_FLAGS if flag in flags]
    if not native:
        return False, "no avx512_bf16 or amx_bf16 flag"
    isa_cap = _onednn_isa_cap()
    if isa_cap in ONEDNN_ISAS_WITHOUT_BF16:
        return False, f"{'+'.join(native)} present but ONEDNN_MAX_CPU_ISA={isa_cap}"
    return True, f"flags {'+'.join(native)}"


def bf16_slowdown(size: int = 256, repeats: int = 3) -> float:
    """bf16 / fp32 time of a (size, size) @ (size, size) matrix product on one thread: ~1 or less where bf16 is
    native, tens where it is emulated. About 50 ms where emulated, a few ms otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(0)
        a, b = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
        return _best_time(a.bfloat16(), b.bfloat16(), repeats) / _best_time(a, b, repeats)
    finally:
        torch.set_num_threads(threads)


def _best_time(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    a @ b  # warm-up: kernel selection and caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return max(min(times), 1e-9)


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _cpuinfo_field(name: str) -> str:
    """The first `name : value` line of /proc/cpuinfo ("" where there is none, e.g. not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def _onednn_isa_cap() -> str:
    return os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
