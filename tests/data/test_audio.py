"""load_audio: every PCM/float format, sample rate and channel count; every bad input -> its reason."""

import io

import numpy as np
import pytest
import soundfile as sf

from avalign.training.data.audio import (
    AUDIO_REASONS,
    AudioError,
    add_noise,
    audio_duration,
    change_speed,
    load_audio,
    reverberate,
)


TARGET_SR = 16000


def sine(sample_rate: int, seconds: float = 0.5, frequency: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sample_rate * seconds))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def encode(samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16", format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=format, subtype=subtype)
    return buffer.getvalue()


def dominant_frequency(samples: np.ndarray, sample_rate: int = TARGET_SR) -> float:
    return np.abs(np.fft.rfft(samples)).argmax() * sample_rate / len(samples)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_formats_and_rates_decode_to_16k_mono(sample_rate, subtype):
    seconds = 0.5
    samples = load_audio({"bytes": encode(sine(sample_rate, seconds), sample_rate, subtype), "path": "x.wav"})
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - seconds * TARGET_SR) <= 1
    assert abs(dominant_frequency(samples) - 440.0) <= 1.0 / seconds
    tolerance = 0.02 if subtype == "PCM_U8" else 0.005  # 8-bit quantisation
    assert abs(np.abs(samples).max() - 0.5) < tolerance


def test_stereo_is_averaged_to_mono():
    left, right = sine(TARGET_SR), sine(TARGET_SR, frequency=1000.0, amplitude=0.2)
    samples = load_audio(encode(np.stack([left, right], axis=1), TARGET_SR, "FLOAT"))
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-6)


def test_flac_and_every_input_form_agree(tmp_path):
    data = encode(sine(TARGET_SR), TARGET_SR, "PCM_16", format="FLAC")
    path = tmp_path / "tone.flac"
    path.write_bytes(data)
    reference = load_audio(str(path))
    for form in (path, data, {"bytes": data, "path": None}, {"bytes": None, "path": str(path)}):
        np.testing.assert_array_equal(load_audio(form), reference)
    assert audio_duration(str(path)) == pytest.approx(0.5)


def test_target_rate_is_honoured():
    samples = load_audio(encode(sine(48000, 1.0), 48000), target_sr=8000)
    assert len(samples) == 8000
    assert abs(dominant_frequency(samples, 8000) - 440.0) <= 1.0


def bad_inputs(tmp_path):
    good = encode(sine(TARGET_SR, 1.0), TARGET_SR)
    nan, inf = sine(TARGET_SR), sine(TARGET_SR)
    nan[100], inf[200] = np.nan, np.inf
    return {
        "unreadable": [str(tmp_path / "missing.wav"), b"this is not audio at all" * 10, good[:30]],
        "empty": [b"", encode(np.zeros(0, np.float32), TARGET_SR)],
        "truncated": [good[: len(good) // 2]],
        "non_finite": [encode(nan, TARGET_SR, "FLOAT"), encode(inf, TARGET_SR, "FLOAT")],
    }


def test_bad_audio_raises_its_reason_and_names_the_row(tmp_path):
    cases = bad_inputs(tmp_path)
    assert set(cases) | {"too_short", "too_long"} == set(AUDIO_REASONS)  # the limits: test_duration_limits
    for reason, inputs in cases.items():
        for audio in inputs:
            with pytest.raises(AudioError) as error:
                load_audio(audio, source="utt-42")
            assert error.value.reason == reason
            assert "utt-42" in str(error.value)


def test_duration_limits():
    data = encode(sine(TARGET_SR, 1.0), TARGET_SR)
    assert len(load_audio(data, min_seconds=0.5, max_seconds=2.0)) == TARGET_SR
    with pytest.raises(AudioError) as error:
        load_audio(data, min_seconds=1.5)
    assert error.value.reason == "too_short"
    with pytest.raises(AudioError) as error:
        load_audio({"bytes": data, "path": "long.wav"}, max_seconds=0.5)
    assert error.value.reason == "too_long" and "long.wav" in str(error.value)


def test_add_noise_reaches_the_drawn_snr_and_reverberation_keeps_length():
    rng = np.random.default_rng(0)
    clean = 0.5 * np.sin(np.linspace(0, 400 * np.pi, 16000))
    noisy = add_noise(clean, rng, (12.0, 12.0))
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 12.0) < 0.01
    wet = reverberate(clean, rng, (0.3, 0.3))
    assert wet.shape == clean.shape and np.isclose(np.abs(wet).max(), np.abs(clean).max())
    assert not np.allclose(wet, clean)


def test_speed_change_scales_the_length():
    clean = 0.5 * np.sin(np.linspace(0, 400 * np.pi, 16000)).astype(np.float32)
    assert len(change_speed(clean, 1.1)) == pytest.approx(16000 / 1.1, rel=0.005)  # the factor is kept to 2 digits
    assert len(change_speed(clean, 0.9)) == pytest.approx(16000 / 0.9, rel=0.005)
    assert len(change_speed(clean, 1.0)) == 16000
