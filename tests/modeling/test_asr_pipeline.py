"""`transformers.pipeline("automatic-speech-recognition")` on a stage-3 folder, with avalign and as remote code, and
on the stock ParakeetForTDT export; a tiny model fitted until it emits tokens (tests/conftest.py, trained_asr_dir)."""

import builtins
import json

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer, pipeline
from transformers.models.parakeet import ParakeetProcessor

from avalign.modeling import FastConformerASRPipeline, FastConformerForCTCTDT

RATE = 16000
TASK = "automatic-speech-recognition"


@pytest.fixture(scope="module")
def folder(trained_asr_dir):
    return trained_asr_dir[0]


@pytest.fixture(scope="module")
def clips(trained_asr_dir):
    return [samples for samples, _ in trained_asr_dir[1]]


@pytest.fixture(scope="module")
def asr(folder):
    return pipeline(TASK, model=str(folder), trust_remote_code=True)


@pytest.fixture(scope="module")
def direct(folder):
    """Greedy transcripts straight from the model, one clip at a time: what the pipeline must reproduce."""
    model = FastConformerForCTCTDT.from_pretrained(folder).eval()
    extractor, tokenizer = AutoFeatureExtractor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)

    def transcribe(samples: np.ndarray, decoding: str = "tdt") -> str:
        inputs = extractor([samples], sampling_rate=RATE, return_attention_mask=True, return_tensors="pt")
        ids = model.transcribe(inputs.input_features, inputs.attention_mask, decoding=decoding).sequences[0]
        return tokenizer.decode(ids, group_tokens=False)

    return transcribe


def padded(samples: np.ndarray, before_s: float, total_s: float) -> np.ndarray:
    """`samples` with `before_s` of silence in front, and silence after up to `total_s`."""
    before, total = int(before_s * RATE), int(total_s * RATE)
    assert before + len(samples) <= total
    return np.concatenate([np.zeros(before, np.float32), samples, np.zeros(total - before - len(samples), np.float32)])


# -------------------------------------------------------------------------------------------------- in process
def test_the_stage3_config_names_the_pipeline_and_the_folder_ships_it(folder, asr):
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"][TASK]["impl"] == "pipeline_fastconformer.FastConformerASRPipeline"
    assert (folder / "pipeline_fastconformer.py").is_file()
    assert type(asr).__name__ == "FastConformerASRPipeline"


def test_tdt_by_default_and_ctc_on_request(asr, clips, direct):
    for samples in clips:
        assert asr(samples)["text"] == direct(samples, "tdt")
        assert asr(samples, decoding="ctc")["text"] == direct(samples, "ctc")
    texts = [asr(samples)["text"] for samples in clips]
    assert all(texts) and len(set(texts)) > 1  # the fitted model writes text, and not one fixed string


def test_ctc_chosen_at_construction(folder, clips, direct):
    ctc = pipeline(TASK, model=str(folder), trust_remote_code=True, decoding="ctc")
    assert ctc(clips[0])["text"] == direct(clips[0], "ctc")


def test_a_batch_of_two_lengths_gives_what_each_clip_gives_alone(asr, clips):
    pair = [clips[0], clips[1]]
    assert len(pair[0]) != len(pair[1])
    for decoding in ("tdt", "ctc"):
        alone = [asr(samples, decoding=decoding)["text"] for samples in pair]
        assert [output["text"] for output in asr(pair, batch_size=2, decoding=decoding)] == alone


def test_files_and_other_sampling_rates(asr, clips, direct, tmp_path):
    import soundfile

    path = tmp_path / "clip.flac"
    soundfile.write(path, clips[0], RATE)
    assert asr(str(path))["text"] == direct(clips[0])  # read with soundfile: no FFmpeg needed
    at_8k = asr({"raw": clips[0][::2].copy(), "sampling_rate": 8000})  # resampled to 16 kHz
    assert isinstance(at_8k["text"], str)


def test_chunks_without_strides_are_transcribed_in_order(asr, clips):
    """Chunks cut exactly at the clip boundaries and no overlap: the transcripts of the two clips, in order, with the
    second clip's word times shifted by the first clip's length."""
    frame = 640  # samples per encoder frame: the pipeline cuts chunks on frame boundaries
    first, second = (samples[: len(samples) // frame * frame] for samples in (clips[3], clips[0]))  # (first longer)
    assert len(first) >= len(second)
    whole = [asr(first, return_timestamps="word"), asr(second, return_timestamps="word")]
    chunked = asr(np.concatenate([first, second]), chunk_length_s=len(first) / RATE, stride_length_s=0,
                  return_timestamps="word")  # fmt: skip
    assert chunked["text"] == whole[0]["text"] + " " + whole[1]["text"]
    shift = len(first) / RATE
    expected = [(w["text"], round(w["timestamp"][0] + shift, 2)) for w in whole[1]["chunks"]]
    got = [(w["text"], w["timestamp"][0]) for w in chunked["chunks"][-len(expected) :]]
    assert [text for text, _ in got] == [text for text, _ in expected]
    assert all(abs(a - b) < 0.011 for (_, a), (_, b) in zip(got, expected))  # both rounded to 10 ms


def test_overlapping_chunks_keep_the_tokens_between_their_strides(asr, clips, folder):
    """Each chunk contributes the tokens it emits between its left and right strides (the overlap is context only);
    the expected transcript is rebuilt here from the model on each chunk's audio, cut the way transformers cuts it."""
    model, tokenizer = FastConformerForCTCTDT.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    audio, chunk, stride, frame = np.concatenate(clips), int(2.56 * RATE), int(0.64 * RATE), 640
    expected = []
    for start in range(0, len(audio), chunk - 2 * stride):
        piece, last = audio[start : start + chunk], start + chunk >= len(audio)
        left, right = (0 if start == 0 else stride), (0 if last else stride)
        inputs = extractor([piece], sampling_rate=RATE, return_attention_mask=True, return_tensors="pt")
        result = model.transcribe(inputs.input_features, inputs.attention_mask)
        expected += [token for token, at in zip(result.sequences[0], result.frame_timestamps[0])
                     if left <= at * frame < len(piece) - right]  # fmt: skip
        if last:
            break
    chunked = asr(audio, chunk_length_s=2.56, stride_length_s=0.64)["text"]
    assert chunked == tokenizer.decode(expected, group_tokens=False)
    assert asr(audio, chunk_length_s=10)["text"] == asr(audio)["text"]  # one chunk: as if not chunked


def test_word_timestamps(asr, clips):
    for decoding in ("tdt", "ctc"):
        output = asr(clips[3], return_timestamps="word", decoding=decoding)
        words = output["chunks"]
        assert [word["text"] for word in words] == output["text"].split()
        starts = [word["timestamp"][0] for word in words]
        assert starts == sorted(starts) and all(start < end for start, end in (w["timestamp"] for w in words))
        assert words[-1]["timestamp"][0] <= len(clips[3]) / RATE


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(0, np.float32), "empty audio"),
        (np.full(RATE, np.nan, np.float32), "NaN or infinite"),
        ({"raw": np.zeros(RATE, np.float32), "sampling_rate": 0}, "positive whole number of Hz"),
        ({"raw": np.zeros(RATE, np.float32), "sampling_rate": "16k"}, "positive whole number of Hz"),
        ({"sampling_rate": RATE}, '"raw"'),
        (np.zeros((2, 2, RATE), np.float32), "channels, samples"),
    ],
)
def test_bad_input_gets_a_clear_error(asr, bad, message):
    with pytest.raises(ValueError, match=message):
        asr(bad)


def test_unsupported_parameters_and_values_are_named(asr, clips):
    with pytest.raises(TypeError, match="generate_kwargs"):
        asr(clips[0], generate_kwargs={"num_beams": 4})
    with pytest.raises(ValueError, match="decoding must be one of"):
        asr(clips[0], decoding="beam")
    with pytest.raises(ValueError, match="return_timestamps must be 'word'"):
        asr(clips[0], return_timestamps="char")


def test_a_loaded_model_through_pipeline_class(folder, clips, direct):
    model = FastConformerForCTCTDT.from_pretrained(folder)
    asr = pipeline(TASK, model=model, tokenizer=AutoTokenizer.from_pretrained(folder),
                   feature_extractor=AutoFeatureExtractor.from_pretrained(folder),
                   pipeline_class=FastConformerASRPipeline)  # fmt: skip
    assert asr(clips[2])["text"] == direct(clips[2])


def test_auto_processor_is_a_parakeet_processor_and_asks_nothing(folder, monkeypatch):
    def no_prompt(*args):
        raise AssertionError(f"interactive prompt: {args}")

    monkeypatch.setattr(builtins, "input", no_prompt)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor) is ParakeetProcessor
    assert type(processor.feature_extractor).__name__ == "ParakeetFeatureExtractor"
    assert processor.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(folder).get_vocab()


# -------------------------------------------------------------------------------------------------- stock export
@pytest.fixture(scope="module")
def stock_tdt_dir(folder, tmp_path_factory):
    export = tmp_path_factory.mktemp("parakeet-tdt")
    FastConformerForCTCTDT.from_pretrained(folder).to_parakeet_tdt().save_pretrained(export)
    AutoProcessor.from_pretrained(folder).save_pretrained(export)
    return export


def test_the_stock_tdt_export_runs_in_the_stock_pipeline(stock_tdt_dir, asr, clips):
    stock = pipeline(TASK, model=str(stock_tdt_dir))
    assert type(stock).__name__ == "AutomaticSpeechRecognitionPipeline" and stock.type == "tdt"
    ours = [asr(samples)["text"] for samples in clips]
    assert [stock(samples)["text"] for samples in clips] == ours
    assert [output["text"] for output in stock(clips, batch_size=2)] == ours  # padded batches of different lengths


# -------------------------------------------------------------------------------------------------- no avalign
WITHOUT_AVALIGN = """
import builtins, json, sys
import numpy as np
def no_prompt(*args):
    raise AssertionError(f"interactive prompt: {args}")
builtins.input = no_prompt
from transformers import AutoProcessor, pipeline
folder, clips = sys.argv[1], [np.load(path) for path in sys.argv[2:]]
asr = pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)
assert "avalign" not in type(asr.model).__module__, type(asr.model).__module__
processors = [AutoProcessor.from_pretrained(folder, trust_remote_code=trust) for trust in (True, False)]
print(json.dumps({
    "processors": [type(processor).__name__ for processor in processors],
    "tdt": [output["text"] for output in asr(clips, batch_size=2)],
    "ctc": [asr(samples, decoding="ctc")["text"] for samples in clips],
    "chunked": asr(np.concatenate(clips), chunk_length_s=2.0)["text"],
}))
"""


def test_remote_code_where_avalign_cannot_be_imported(folder, clips, asr, tmp_path, run_without_avalign):
    paths = []
    for index, samples in enumerate(clips):
        paths.append(tmp_path / f"clip{index}.npy")
        np.save(paths[-1], samples)
    remote = json.loads(run_without_avalign(WITHOUT_AVALIGN, folder, *paths).strip().splitlines()[-1])
    assert remote["processors"] == ["ParakeetProcessor", "ParakeetProcessor"]  # and no interactive question
    assert remote["tdt"] == [asr(samples)["text"] for samples in clips]
    assert remote["ctc"] == [asr(samples, decoding="ctc")["text"] for samples in clips]
    assert remote["chunked"] == asr(np.concatenate(clips), chunk_length_s=2.0)["text"]
