"""The compiled CPU kernels of the TDT loss (csrc/tdt_cpu.cpp): built on first use, cached, called through ctypes.

Why a small C++ library and not numba or a torch extension: its one hot loop (exp over every logit) needs a
vectorised exp, which GCC's vector extensions give without fast-math (numba needs Intel's SVML for that), and a plain
shared library with extern "C" functions builds in about a second with any g++ (a torch extension takes a minute and
ninja). ctypes releases the GIL during each call; the kernels run torch.get_num_threads() OpenMP threads on the
libgomp that torch has already loaded (the same soname), so they share torch's pool.

The library is built with `g++ -O3 -march=native` into a user cache folder: $AVALIGN_KERNEL_CACHE, else
$XDG_CACHE_HOME/avalign/kernels, else ~/.cache/avalign/kernels (a temporary folder if none is writable), under a name
that hashes the source, the flags, the compiler and the CPU, so a read-only install or a shared home folder works.
Without a compiler (or with AVALIGN_TDT_KERNELS=0) `kernel_library()` returns None and the loss uses its PyTorch path.
"""

import ctypes
import functools
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch


logger = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "tdt_cpu.cpp"
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fopenmp"]  # OpenMP: torch's libgomp
ABI_VERSION = 4
MAX_KERNEL_DURATIONS = 32  # the kernels keep up to 2 arcs per duration on the stack
DTYPES = {torch.float32: 0, torch.bfloat16: 1}

_i64, _ptr, _int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
SIGNATURES = {
    "avalign_tdt_token_statistics": [_ptr, _int] + [_i64] * 7 + [_ptr] * 3 + [_i64] + [_ptr] * 4 + [_int],
    "avalign_tdt_token_gradient": [_ptr, _int] + [_i64] * 7 + [_ptr] + [_i64] * 3 + [_ptr] * 8 + [_i64, _int],
    "avalign_tdt_log_alpha": [_ptr, _ptr, _ptr] + [_i64] * 4 + [_ptr] * 5 + [_int],
    "avalign_tdt_log_beta": [_ptr, _ptr, _ptr, _ptr] + [_i64] * 4 + [_ptr] * 5 + [_int],
    "avalign_tdt_arcs": [_ptr] * 5 + [_i64, ctypes.c_double] + [_i64] * 3 + [_ptr] * 7 + [_int],
    "avalign_tdt_state_gradients": [_ptr] * 9 + [_i64] * 4 + [_ptr] * 2 + [ctypes.c_double] + [_ptr] * 5 + [_int],
    "avalign_advise_huge_pages": [_ptr, _i64],
    "avalign_greedy_fill_slots": [_ptr] * 5 + [_i64] * 3 + [_ptr] * 4,
    "avalign_greedy_search_step": [_ptr, _i64, _ptr, _i64, _i64] + [_ptr] * 9 + [_i64] * 3 + [_ptr] * 4,
    "avalign_greedy_emit_step": [_ptr] * 8 + [_i64] * 3,
}
RESULTS = {"avalign_greedy_search_step": _i64, "avalign_greedy_emit_step": _i64}
kernel_build_info = {}  # path, compile_s (0 when loaded from the cache), or the reason the kernels are off


def _cache_dir():
    if os.environ.get("AVALIGN_KERNEL_CACHE"):
        return Path(os.environ["AVALIGN_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "avalign" / "kernels"


def _cpu_flags():
    try:
        return next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor()


def _build(compiler, target):
    """Compile into a temporary file next to `target`, then rename: concurrent builds never see a partial file.
    A compiler without OpenMP builds the std::thread version."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".so.partial")
    os.close(handle)
    try:
        command = [compiler, *FLAGS, "-o", partial, str(SOURCE)]
        if subprocess.run(command, capture_output=True).returncode != 0:
            command.remove("-fopenmp")
            subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _load(path):
    lib = ctypes.CDLL(str(path))
    if lib.avalign_tdt_abi_version() != ABI_VERSION:
        raise OSError(f"{path} has ABI version {lib.avalign_tdt_abi_version()}, expected {ABI_VERSION}")
    for name, arguments in SIGNATURES.items():
        getattr(lib, name).argtypes, getattr(lib, name).restype = arguments, RESULTS.get(name)
    return lib


@functools.cache
def kernel_library():
    """The loaded kernel library, built on first use; None where it cannot be (the reason: `kernel_build_info`)."""
    kernel_build_info.clear()
    if os.environ.get("AVALIGN_TDT_KERNELS", "1") == "0":
        kernel_build_info["disabled"] = "AVALIGN_TDT_KERNELS=0"
        return None
    if not SOURCE.exists():  # e.g. a Hub folder's copy of the modeling code (transformers copies .py files only)
        kernel_build_info["disabled"] = f"kernel source {SOURCE} not found"
        return None
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None or platform.system() == "Windows":
        kernel_build_info["disabled"] = "no C++ compiler found (g++ or $CXX)"
        logger.info("TDT loss: %s; using the PyTorch path", kernel_build_info["disabled"])
        return None
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, version, _cpu_flags()]).encode()).hexdigest()[:16]
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / f"avalign-kernels-{os.getuid()}"):
        path = folder / f"tdt_cpu-{key}.so"
        try:
            started = time.perf_counter()
            compiled = not path.exists()
            if compiled:
                _build(compiler, path)
            lib = _load(path)
            kernel_build_info.update(path=str(path), compile_s=time.perf_counter() - started if compiled else 0.0)
            return lib
        except subprocess.CalledProcessError as error:
            kernel_build_info["disabled"] = f"{compiler} failed: {error.stderr.strip()[-2000:]}"
            break
        except OSError as error:  # an unwritable cache folder: try the next one
            kernel_build_info["disabled"] = f"{folder}: {error}"
    logger.warning("TDT loss: compiled kernels unavailable (%s); using the PyTorch path", kernel_build_info["disabled"])
    return None


def kernels_for(token_logits):
    """The kernel library, if it serves these CPU logits (float32 or bfloat16, unit stride over V); else None."""
    if token_logits.device.type != "cpu" or token_logits.dtype not in DTYPES or token_logits.stride(-1) != 1:
        return None
    return kernel_library()


def _p(tensor):
    return ctypes.c_void_p(tensor.data_ptr())


def _indices(*tensors):
    """int64, contiguous; bound to names by the caller, so that they outlive the call that reads their pointers."""
    return [x.long().contiguous() for x in tensors]


def _threads():
    return torch.get_num_threads()


def compiled_token_statistics(lib, token_logits, label_ids, logit_lengths, target_lengths, blank_token_id):
    """(B, T, U+1, V) logits -> log-normaliser, blank logit, label logit (float32) and finiteness (bool), (B, T, U+1).
    States outside an utterance hold zeros (and True)."""
    batch, max_t, max_u1, vocab = token_logits.shape
    log_normalizer, blank, label = token_logits.new_zeros((3, batch, max_t, max_u1), dtype=torch.float32)
    finite = torch.ones((batch, max_t, max_u1), dtype=torch.bool)
    label_ids, frames, labels = _indices(label_ids, logit_lengths, target_lengths)
    lib.avalign_tdt_token_statistics(
        _p(token_logits), DTYPES[token_logits.dtype], batch, max_t, max_u1, vocab, *token_logits.stride()[:3],
        _p(label_ids), _p(frames), _p(labels), blank_token_id, _p(log_normalizer), _p(blank), _p(label), _p(finite),
        _threads(),
    )
    return log_normalizer, blank, label, finite


class _GradientBuffers:
    """The storage of the last large gradient of each dtype, handed out again once nothing else uses it.

    A fresh 200 MB gradient costs ~50k page faults (more time than the kernel that writes it), and the C library
    returns such a buffer to the OS as soon as autograd frees it. Like CUDA's caching allocator, this keeps it: a
    training loop's next backward writes into the same pages. A storage is reused only when this cache holds its one
    remaining reference (no tensor, view or `.grad` still points to it) and it is at most twice the size asked for.
    `release()` frees the kept storages.
    """

    SMALLEST = 1 << 22  # bytes; smaller buffers come from the allocator's free lists anyway

    def __init__(self):
        self._kept = {}  # dtype -> UntypedStorage
        self._lock = threading.Lock()

    def empty(self, lib, shape, dtype):
        """An uninitialised contiguous tensor (shape, dtype), on a kept storage where one is free."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.SMALLEST:
            return torch.empty(shape, dtype=dtype)
        with self._lock:
            kept = self._kept.get(dtype)
            if kept is not None and _only_reference(kept) and nbytes <= kept.nbytes() <= 2 * nbytes:
                return torch.empty(0, dtype=dtype).set_(kept, 0, shape)
            out = torch.empty(shape, dtype=dtype)
            lib.avalign_advise_huge_pages(_p(out), out.nbytes)  # fewer faults on first touch where THP is on
            self._kept[dtype] = out.untyped_storage()
            return out

    def release(self):
        with self._lock:
            self._kept.clear()


def _only_reference(storage):
    """True when `storage` (a Python UntypedStorage) holds the only reference to its memory."""
    return torch._C._storage_Use_Count(storage._cdata) == 1


gradient_buffers = _GradientBuffers()


def empty_gradient(lib, token_logits):
    """An uninitialised tensor like token_logits, contiguous, recycled from the last backward where possible."""
    return gradient_buffers.empty(lib, token_logits.shape, token_logits.dtype)


def compiled_token_gradient(lib, token_logits, gradient, label_ids, logit_lengths, target_lengths, blank_token_id,
                            out):
    """Write d loss / d token_logits (B, T, U+1, V) into `out` (same shape and dtype, unit stride over V) from the
    per-state `_TokenGradient`; zeros outside the utterances and on rows that are not significant."""
    batch, max_t, max_u1, vocab = token_logits.shape
    per_state = [x.float().contiguous() for x in (gradient.softmax_shift, gradient.blank_occupancy,
                                                  gradient.label_occupancy)]
    significant = gradient.significant.contiguous()
    negative = torch.tensor(gradient.negative, dtype=torch.bool)
    label_ids, frames, labels = _indices(label_ids, logit_lengths, target_lengths)
    lib.avalign_tdt_token_gradient(
        _p(token_logits), DTYPES[token_logits.dtype], batch, max_t, max_u1, vocab, *token_logits.stride()[:3],
        _p(out), *out.stride()[:3], *map(_p, per_state), _p(significant), _p(negative), _p(label_ids), _p(frames),
        _p(labels), blank_token_id, _threads(),
    )


def _row_spans(rows):
    """A pruned lattice's (start, end) rows per frame, (B, T) each, as int64 arrays (None: every row) and pointers."""
    spans = _indices(*rows) if rows is not None else []
    return spans, [_p(x) for x in spans] or [None, None]


def compiled_log_alpha(lib, blank, label, durations, logit_lengths, target_lengths, rows=None):
    """(B, T, U+1, D) float64 arc log-weights and the (D,) durations -> alpha (B, T, U+1), -inf outside the
    utterances (and outside rows = (start, end), (B, T) each, where given)."""
    alpha = torch.empty(blank.shape[:3], dtype=torch.float64)
    blank, label = blank.contiguous(), label.contiguous()
    durations, frames, labels = _indices(durations, logit_lengths, target_lengths)
    spans, span_pointers = _row_spans(rows)
    lib.avalign_tdt_log_alpha(_p(blank), _p(label), _p(durations), len(durations), *blank.shape[:3], _p(frames),
                              _p(labels), *span_pointers, _p(alpha), _threads())
    return alpha


def compiled_log_beta(lib, blank, label, final, durations, logit_lengths, target_lengths, rows=None):
    """Arc log-weights (B, T, U+1, D) and the end log-weights (B, T, U+1) -> beta (B, T, U+1), -inf outside the
    utterances (and outside rows, as for alpha)."""
    beta = torch.empty(blank.shape[:3], dtype=torch.float64)
    blank, label, final = blank.contiguous(), label.contiguous(), final.contiguous()
    durations, frames, labels = _indices(durations, logit_lengths, target_lengths)
    spans, span_pointers = _row_spans(rows)
    lib.avalign_tdt_log_beta(_p(blank), _p(label), _p(final), _p(durations), len(durations), *blank.shape[:3],
                             _p(frames), _p(labels), *span_pointers, _p(beta), _threads())
    return beta


def _doubles(*tensors):
    """float64, contiguous; bound to names by the caller, like `_indices`."""
    return [x.double().contiguous() for x in tensors]


def compiled_arcs(lib, log_normalizer, blank_logit, label_logit, duration_logits, sigma, durations, logit_lengths,
                  target_lengths):
    """Per-state statistics (B, T, U+1) and duration logits (B, T, U+1, D) -> the lattice in float64: duration
    log-probs, blank and label arc log-weights (B, T, U+1, D), the end log-weights (B, T, U+1), and whether every
    duration logit of each state is finite (bool (B, T, U+1)). Outside the utterances: arcs -inf, finite True."""
    statistics = _doubles(log_normalizer, blank_logit, label_logit, duration_logits)
    durations, frames, labels = _indices(torch.as_tensor(durations), logit_lengths, target_lengths)
    log_probs, blank, label = torch.empty((3, *duration_logits.shape), dtype=torch.float64)
    final = torch.empty(duration_logits.shape[:3], dtype=torch.float64)
    finite = torch.empty(duration_logits.shape[:3], dtype=torch.bool)
    lib.avalign_tdt_arcs(*map(_p, statistics), _p(durations), len(durations), sigma, *duration_logits.shape[:3],
                         _p(frames), _p(labels), _p(log_probs), _p(blank), _p(label), _p(final), _p(finite),
                         _threads())
    return log_probs, blank, label, final, finite


def compiled_state_gradients(lib, blank, label, duration_log_probs, log_alpha, log_beta, log_likelihood, scale,
                             log_normalizer, durations, logit_lengths, target_lengths, flush):
    """The lattice's gradients, float64: softmax shift, blank and label occupancies, significance (|occupancy| >
    flush) (B, T, U+1), and d loss / d duration logits (B, T, U+1, D); `scale` (B,) is the incoming gradient."""
    inputs = _doubles(blank, label, duration_log_probs, log_alpha, log_beta, log_likelihood, scale, log_normalizer)
    durations, frames, labels = _indices(torch.as_tensor(durations), logit_lengths, target_lengths)
    shift, blank_occupancy, label_occupancy = torch.empty((3, *log_alpha.shape), dtype=torch.float64)
    significant = torch.empty(log_alpha.shape, dtype=torch.bool)
    duration_grad = torch.empty(blank.shape, dtype=torch.float64)
    lib.avalign_tdt_state_gradients(*map(_p, inputs), _p(durations), len(durations), *log_alpha.shape, _p(frames),
                                    _p(labels), flush, _p(shift), _p(blank_occupancy), _p(label_occupancy),
                                    _p(significant), _p(duration_grad), _threads())
    return shift, blank_occupancy, label_occupancy, significant, duration_grad


class GreedyBookkeeping:
    """The per-row state of batched label-looping greedy TDT decoding, advanced by the compiled kernels between the
    joint and prediction-network products (FastConformerForCTCTDT.tdt_greedy_decode). Each method is one C call in
    place of ~10-20 small torch ops. encoder_states (B, T', H) float32; encoder_lengths (B,).

    The joint runs on B input slots. While S < B rows search, each gets B / S of them, for its next frames: a blank
    skipping to one of those needs no further product (avalign_greedy_fill_slots in csrc/tdt_cpu.cpp). Each row's
    logits come from the same product of the same inputs, so the outputs are those of the torch loop."""

    def __init__(self, lib, encoder_states, encoder_lengths, durations, blank_token_id, max_symbols_per_step):
        self.lib, self.encoder = lib, encoder_states.contiguous()
        self.batch, self.max_t, self.hidden = self.encoder.shape
        self.lengths, self.durations = _indices(encoder_lengths, durations)
        self.blank, self.max_symbols = blank_token_id, max_symbols_per_step
        rows = self.batch
        per_row = torch.zeros(8, rows, dtype=torch.long)
        self.time, self.symbols_at_frame, self.joint_evaluations, self.token, self.duration = per_row[:5]
        self.slot_first, self.slot_count, self.slot_time = per_row[5:]  # the joint's input slots of each row
        self.active = (self.time < self.lengths).to(torch.uint8)
        self.searching, self.emit = torch.zeros(2, rows, dtype=torch.uint8)
        self.emitted = self.emit.view(torch.bool)  # the same bytes, as a mask for torch.where
        self.record = torch.zeros(4, rows, dtype=torch.long)  # emitted?, token, frame, duration
        self.joint_input = torch.zeros(rows, self.hidden)  # (B slots, H)

    def _slots(self):
        return _p(self.slot_first), _p(self.slot_count), _p(self.slot_time), _p(self.joint_input)

    def start_search(self, decoder_state):
        """Every active row looks for its next label from its current frame; fills the joint's input slots."""
        self.searching.copy_(self.active)
        self.token.fill_(self.blank)
        self.duration.zero_()
        self.decoder = decoder_state.contiguous()
        self.lib.avalign_greedy_fill_slots(_p(self.encoder), _p(self.decoder), _p(self.time), _p(self.searching),
                                           _p(self.lengths), self.batch, self.max_t, self.hidden, *self._slots())

    def search_step(self, logits):
        """(B slots, V + D) float32 joint logits -> how many rows still search (their slots filled again)."""
        logits = logits.contiguous()
        return self.lib.avalign_greedy_search_step(
            _p(logits), logits.shape[1] - len(self.durations), _p(self.durations), len(self.durations), self.blank,
            _p(self.lengths), _p(self.searching), _p(self.token), _p(self.duration), _p(self.time),
            _p(self.symbols_at_frame), _p(self.joint_evaluations), _p(self.encoder), _p(self.decoder), self.batch,
            self.max_t, self.hidden, *self._slots(),
        )

    def emit_step(self):
        """The rows that found a label emit it and advance -> how many emitted; `record` (4, B) holds the step."""
        return self.lib.avalign_greedy_emit_step(
            _p(self.token), _p(self.duration), _p(self.time), _p(self.symbols_at_frame), _p(self.lengths),
            _p(self.active), _p(self.emit), _p(self.record), self.batch, self.blank, self.max_symbols,
        )


def greedy_kernels_for(encoder_states, activation):
    """The kernel library, if it serves greedy decoding of these encoder states (CPU float32, a ReLU joint)."""
    relu = isinstance(activation, torch.nn.ReLU) or activation is torch.relu
    if encoder_states.device.type != "cpu" or encoder_states.dtype != torch.float32 or not relu:
        return None
    return kernel_library()
