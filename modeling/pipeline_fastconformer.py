"""`pipeline("automatic-speech-recognition")` for `FastConformerForCTCTDT`: greedy TDT by default, CTC on request.

    asr = pipeline("automatic-speech-recognition", model="NAME/avalign-asr", trust_remote_code=True)
    asr("clip.flac")                                      # {"text": ...}: greedy TDT
    asr("clip.flac", decoding="ctc")                      # greedy CTC (also `pipeline(..., decoding="ctc")`)
    asr([clip_a, clip_b], batch_size=2)                   # arrays at 16 kHz, or {"raw": array, "sampling_rate": sr}
    asr(long_clip, chunk_length_s=20)                     # chunks with overlapping strides, stitched by token time
    asr(clip, return_timestamps="word")                   # + "chunks": [{"text": word, "timestamp": (start, end)}]

Why a pipeline class of its own: transformers' ASR pipeline takes its transducer path only for the Parakeet model
types it lists and sends every other model down its CTC path, so a stage-3 config names this class in
`custom_pipelines` and `save_pretrained` ships this file with the model. transformers runs a repository's pipeline
class only with `trust_remote_code=True` (also when avalign is installed, which then supplies the classes); with a
model already loaded, pass `pipeline_class=FastConformerASRPipeline` instead.

Self-contained like the rest of modeling/: torch, numpy and transformers; soundfile and scipy are used when present
(reading paths without FFmpeg, resampling without torchaudio).
"""

import numpy as np
import torch
from transformers import AutomaticSpeechRecognitionPipeline
from transformers.pipelines.automatic_speech_recognition import _to_mono

try:  # optional: without them the stock paths (FFmpeg for files, torchaudio for resampling) are used
    import soundfile
    from scipy.signal import resample_poly
except ImportError:
    soundfile = resample_poly = None

DECODINGS = ("tdt", "ctc")
TOKEN_PAD = -1  # pads the per-utterance token lists into (B, N) tensors, which the pipeline can unbatch


class FastConformerASRPipeline(AutomaticSpeechRecognitionPipeline):
    """The transformers ASR pipeline with FastConformer greedy decoding (see the module docstring).

    Parameters (at construction or per call): `decoding` ("tdt" | "ctc"), `chunk_length_s`, `stride_length_s`,
    `return_timestamps` (None | "word").
    """

    @property
    def _align_to(self) -> int:
        """Audio samples per encoder frame: chunks and strides are cut on frame boundaries."""
        return self.feature_extractor.hop_length * self.model.config.encoder_config.subsampling_factor

    def _sanitize_parameters(
        self, chunk_length_s=None, stride_length_s=None, return_timestamps=None, decoding=None, **unsupported
    ):
        if unsupported:
            raise TypeError(
                f"FastConformerASRPipeline does not take {sorted(unsupported)}; its parameters are decoding, "
                "chunk_length_s, stride_length_s, return_timestamps and batch_size"
            )
        if decoding is not None and decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
        if return_timestamps not in (None, False, "word"):
            raise ValueError(f"return_timestamps must be 'word' (or None), got {return_timestamps!r}")
        preprocess = {"chunk_length_s": chunk_length_s, "stride_length_s": stride_length_s}
        forward = {} if decoding is None else {"decoding": decoding}
        postprocess = {} if return_timestamps is None else {"return_timestamps": return_timestamps}
        return {k: v for k, v in preprocess.items() if v is not None}, forward, postprocess

    def preprocess(self, inputs, chunk_length_s=0, stride_length_s=None):
        yield from super().preprocess(self._checked_audio(inputs), chunk_length_s, stride_length_s)

    def _checked_audio(self, inputs):
        """A path, an array or a {"raw" | "array", "sampling_rate"} dict -> (T,) float32 samples at the model's rate,
        with a clear error for what the model cannot transcribe."""
        target_rate = self.feature_extractor.sampling_rate
        if isinstance(inputs, str) and soundfile is not None and not inputs.startswith(("http://", "https://")):
            samples, rate = soundfile.read(inputs, dtype="float32", always_2d=True)
            inputs = {"raw": samples.mean(axis=1), "sampling_rate": rate}
        if isinstance(inputs, dict):
            inputs = dict(inputs)
            rate = inputs.pop("sampling_rate", None)
            samples = inputs.pop("raw", inputs.pop("array", None))
            if samples is None or rate is None:
                raise ValueError('an audio dict needs "raw" (or "array") samples and their "sampling_rate"')
            if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
                raise ValueError(f"sampling_rate must be a positive whole number of Hz, got {rate!r}")
            samples = _mono_array(samples)
            _check_samples(samples)
            if rate != target_rate and resample_poly is not None:
                divisor = np.gcd(int(rate), target_rate)
                samples = resample_poly(samples, target_rate // divisor, int(rate) // divisor).astype(np.float32)
                rate = target_rate
            return {"raw": samples, "sampling_rate": int(rate), **inputs}  # other keys ("stride") pass through
        if isinstance(inputs, (np.ndarray, torch.Tensor)):
            samples = _mono_array(inputs)
            _check_samples(samples)
            return samples
        return inputs  # bytes, URLs: the stock pipeline reads them (FFmpeg)

    def _forward(self, model_inputs, decoding="tdt"):
        """Greedy decoding of a (chunk) batch; tokens, their encoder frames and durations as (B, N) tensors."""
        is_last, stride = model_inputs.pop("is_last"), model_inputs.pop("stride", None)
        result = self.model.transcribe(
            model_inputs.pop("input_features"), model_inputs.pop("attention_mask", None), decoding=decoding
        )
        durations = result.token_durations or [[1] * len(tokens) for tokens in result.sequences]  # CTC: one frame
        output = {
            "is_last": is_last,
            "tokens": _padded(result.sequences),
            "frames": _padded(result.frame_timestamps),
            "durations": _padded(durations),
        }
        return output if stride is None else {**output, "stride": stride}

    def postprocess(self, model_outputs, return_timestamps=None):
        """Chunks in order -> {"text"} (+ "chunks" of word timestamps). A chunk keeps the tokens emitted between its
        left and right strides, so the overlapping context is transcribed once."""
        samples_per_frame = self._align_to
        tokens, starts, ends = [], [], []  # starts / ends in samples of the whole clip
        kept_samples = 0  # samples of the clip covered by the chunks before this one
        for output in model_outputs:
            length, left, right = output.get("stride") or (None, 0, 0)
            keep = output["tokens"][0] != TOKEN_PAD
            offset = kept_samples - left  # where this chunk starts in the clip
            for token, frame, duration in zip(*(output[key][0][keep].tolist() for key in ("tokens", "frames", "durations"))):
                start = frame * samples_per_frame
                if length is None or left <= start < length - right:
                    tokens.append(token)
                    starts.append(offset + start)
                    ends.append(offset + start + max(duration, 1) * samples_per_frame)
            kept_samples += 0 if length is None else length - left - right
        result = {"text": self.tokenizer.decode(tokens, skip_special_tokens=True, group_tokens=False)}
        if return_timestamps == "word":
            seconds = 1 / self.feature_extractor.sampling_rate
            result["chunks"] = [
                {"text": text, "timestamp": (round(start * seconds, 2), round(end * seconds, 2))}
                for text, start, end in word_spans(self.tokenizer, tokens, starts, ends)
            ]
        return result


def word_spans(tokenizer, token_ids: list[int], starts: list, ends: list) -> list[tuple[str, float, float]]:
    """(word, start, end) per word: a word begins at each token that starts with "▁" (SentencePiece's space); it
    spans from its first token's start to its last token's end (any unit: frames, samples, seconds)."""
    words = []  # [token ids, start, end]
    for piece, token_id, start, end in zip(tokenizer.convert_ids_to_tokens(token_ids), token_ids, starts, ends):
        if piece.startswith("▁") or not words:
            words.append([[], start, end])
        words[-1][0].append(token_id)
        words[-1][2] = end
    spans = [(tokenizer.decode(ids, group_tokens=False).strip(), start, end) for ids, start, end in words]
    return [span for span in spans if span[0]]


def _mono_array(samples) -> np.ndarray:
    """(T,) or (C, T) audio, array or tensor -> (T,) float32, through the stock pipeline's own downmix (which
    refuses a layout it would have to guess, such as channels-last)."""
    samples = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    return _to_mono(samples).astype(np.float32)


def _check_samples(samples: np.ndarray) -> None:
    if samples.size == 0:
        raise ValueError("empty audio: the input holds no samples")
    bad = int((~np.isfinite(samples)).sum())
    if bad:
        raise ValueError(f"the audio has {bad} NaN or infinite samples (of {samples.size}); clean or drop the clip")


def _padded(rows: list[list[int]]) -> torch.Tensor:
    """Per-utterance lists -> (B, N) long tensor padded with TOKEN_PAD."""
    width = max((len(row) for row in rows), default=0)
    return torch.tensor([row + [TOKEN_PAD] * (width - len(row)) for row in rows], dtype=torch.long).reshape(len(rows), width)


__all__ = ["FastConformerASRPipeline", "word_spans"]
