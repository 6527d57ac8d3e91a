"""Audio decoding with soundfile: any sample rate, 8/16/24/32-bit int or float, mono or multichannel.

datasets' own audio decoding needs torchcodec + FFmpeg; we keep audio columns as `Audio(decode=False)`
({"bytes", "path"}) and decode here. Bad audio raises `AudioError` with a `reason` code:

    unreadable   missing file, unknown format, cut inside its header
    truncated    the WAV header announces more samples than the file holds
    empty        no samples (or a zero-byte file)
    non_finite   NaN or Inf samples
    too_short    shorter than `min_seconds`
    too_long     longer than `max_seconds` (checked from the header, before decoding)
"""

import io
import math
import os
import struct
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve, resample_poly


TARGET_SAMPLING_RATE = 16000
AUDIO_REASONS = ("unreadable", "truncated", "empty", "non_finite", "too_short", "too_long")


class DataError(ValueError):
    """Bad input data: `reason` is a short code for skip reports, the message names the file or row."""

    def __init__(self, reason: str, source: str, detail: str):
        super().__init__(f"{source}: {detail} ({reason})")
        self.reason, self.source, self.detail = reason, source, detail


class AudioError(DataError):
    """Bad audio; `reason` is one of `AUDIO_REASONS`."""


def _read_bytes(audio, source: str | None) -> tuple[bytes, str]:
    """The encoded file and a name for messages, from a {"bytes", "path"} dict, a path or raw bytes."""
    if isinstance(audio, dict):
        if audio.get("bytes") is not None:
            return bytes(audio["bytes"]), source or audio.get("path") or "<bytes>"
        audio = audio.get("path")
    if isinstance(audio, (bytes, bytearray)):
        return bytes(audio), source or "<bytes>"
    if not audio:
        raise AudioError("unreadable", source or "<row>", "no audio bytes and no path")
    path = os.fspath(audio)
    source = source or path
    try:
        with open(path, "rb") as file:
            return file.read(), source
    except OSError as error:
        raise AudioError("unreadable", source, f"cannot open file: {error.strerror}") from error


def _wav_is_truncated(data: bytes) -> bool:
    """True when a RIFF/WAVE `data` chunk announces more bytes than follow it (libsndfile reads what is there)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    position = 12
    while position + 8 <= len(data):
        chunk_id, chunk_size = data[position : position + 4], struct.unpack("<I", data[position + 4 : position + 8])[0]
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF mean "length unknown" (streamed writers)
            return chunk_size not in (0, 0xFFFFFFFF) and position + 8 + chunk_size > len(data)
        position += 8 + chunk_size + (chunk_size & 1)
    return False


def _open(data: bytes, source: str) -> sf.SoundFile:
    if not data:
        raise AudioError("empty", source, "zero-byte file")
    try:
        return sf.SoundFile(io.BytesIO(data))
    except sf.SoundFileError as error:
        raise AudioError("unreadable", source, f"soundfile cannot decode it: {error}") from error


def audio_duration(audio, source: str | None = None) -> float:
    """Duration in seconds from the file header only (cheap); raises `AudioError` ("unreadable", "empty")."""
    data, source = _read_bytes(audio, source)
    with _open(data, source) as sound:
        return sound.frames / sound.samplerate


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (B,)->(B',) in float32; identity when the rates match."""
    if source_rate == target_rate:
        return samples
    divisor = gcd(source_rate, target_rate)
    return resample_poly(samples, target_rate // divisor, source_rate // divisor).astype(np.float32)


# ---------------------------------------------------------------- degradations (the corpus's out-of-domain condition
# and the training-time augmentation share them)


def reverberate(samples: np.ndarray, rng: np.random.Generator, rt60_seconds: tuple[float, float]) -> np.ndarray:
    """Convolve (T,) with a synthetic room response: exponentially decaying noise reaching -60 dB at RT60."""
    rt60 = rng.uniform(*rt60_seconds)
    t = np.arange(int(rt60 * TARGET_SAMPLING_RATE)) / TARGET_SAMPLING_RATE
    response = rng.standard_normal(len(t)) * np.exp(-math.log(1000) * t / rt60)
    response[0] = 1.0  # direct path
    wet = fftconvolve(samples, response)[: len(samples)]
    return wet * (np.abs(samples).max() / max(np.abs(wet).max(), 1e-9))


def add_noise(samples: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """(T,) plus white noise at a signal-to-noise ratio drawn from `snr_db`."""
    snr = rng.uniform(*snr_db)
    noise = rng.standard_normal(len(samples))
    scale = math.sqrt(np.mean(samples**2) / (np.mean(noise**2) * 10 ** (snr / 10)))
    return samples + scale * noise


def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """(T,) played `factor` times faster, pitch and formants moving with it (Kaldi's speed perturbation); the factor
    is rounded to a ratio of integers near 100."""
    return resample(samples, 100, round(100 / factor))


def load_audio(
    audio,
    target_sr: int = TARGET_SAMPLING_RATE,
    min_seconds: float | None = None,
    max_seconds: float | None = None,
    source: str | None = None,
) -> np.ndarray:
    """Decode `audio` ({"bytes", "path"} dict, path or bytes) to float32 mono at `target_sr`, shape (T,).

    Channels are averaged; integer PCM is scaled to [-1, 1) by soundfile. `source` names the row in errors.
    """
    data, source = _read_bytes(audio, source)
    with _open(data, source) as sound:
        sample_rate, frames = sound.samplerate, sound.frames
        if frames == 0:
            raise AudioError("empty", source, "the file holds no samples")
        seconds = frames / sample_rate
        if max_seconds is not None and seconds > max_seconds:
            raise AudioError("too_long", source, f"{seconds:.2f} s is over the {max_seconds} s limit")
        if _wav_is_truncated(data):
            raise AudioError("truncated", source, "the WAV data chunk is shorter than its header says")
        try:
            samples = sound.read(dtype="float32", always_2d=True)  # (T, C)
        except sf.SoundFileError as error:
            raise AudioError("truncated", source, f"decoding stopped: {error}") from error
    if len(samples) < frames:
        raise AudioError("truncated", source, f"decoded {len(samples)} of {frames} announced samples")
    if min_seconds is not None and seconds < min_seconds:
        raise AudioError("too_short", source, f"{seconds:.3f} s is under the {min_seconds} s limit")
    samples = samples.mean(axis=1)  # (T,)
    if not np.isfinite(samples).all():
        raise AudioError("non_finite", source, f"{int((~np.isfinite(samples)).sum())} NaN/Inf samples")
    return resample(samples, sample_rate, target_sr)
