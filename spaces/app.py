"""The avalign Space: transcribe picture-prompted speech, compare the aligned system with the baseline, and retrieve
the pictures the speech describes.

    python spaces/app.py --model RUN_DIR                                   # a pipeline run directory
    python spaces/app.py --model RUN_DIR --targets roman                   # its romanized-target models
    python spaces/app.py --model ASR_FOLDER_OR_HUB_ID [--baseline-model BASELINE_FOLDER_OR_HUB_ID]
                         [--align-model ALIGN_FOLDER_OR_HUB_ID --gallery GALLERY_DIR] [--examples EXAMPLES_DIR]
                         [--deromanizer char:FOLDER | lm:MODEL_ID] [--unified-model UNIFIED_FOLDER_OR_HUB_ID]

With a run directory the ASR model is `RUN_DIR/asr/aligned-f1.0`, the baseline `RUN_DIR/asr/baseline-f1.0` (when the
run has one), the alignment model `RUN_DIR/align`, the gallery the test-split images of `RUN_DIR/corpus` (with their
vision-teacher embeddings) and the examples one test clip per language; with `--targets roman` the ASR models are
`RUN_DIR/asr/roman-aligned-f1.0` and `roman-baseline-f1.0` and the de-romanizer `RUN_DIR/deromanizer`. A model trained
on romanized targets shows its romanized transcript and, for a chosen language, the native script from the
de-romanizer. A unified model (Zero-AVSR: the romanizer's frames straight into a causal LM; with a run directory,
`RUN_DIR/unified/zeroshot-<language>-aligned` where the run has one) adds a tab that writes the native script of the
chosen language; without one the Space has no such tab. On the Hub the Space runs `app.py` without arguments: every
option then falls back to an environment variable (`AVALIGN_MODEL`, `AVALIGN_BASELINE_MODEL`, `AVALIGN_ALIGN_MODEL`,
`AVALIGN_GALLERY`, `AVALIGN_EXAMPLES`, `AVALIGN_TARGETS`, `AVALIGN_DEROMANIZER`, `AVALIGN_UNIFIED_MODEL`) and the
gallery and examples to the `gallery/` and `examples/` folders next to this file.

A gallery folder holds PNGs, `gallery.json` ({"teacher": fingerprint, "images": [{"file", "caption", "image_id"}],
"skipped": {image_id: reason}}) and `embeddings.safetensors` ({"embeddings": (N, E)} unit-norm teacher embeddings,
row i for images[i]); `build_gallery` writes one from a run directory. An examples folder holds audio clips and
`examples.json` ({file: {"transcript", "language"}}); `write_examples` writes one. A clip whose bytes are those of an
example is that example: the Space shows its reference transcript and, in the comparison, each system's CER.

Language detection: the corpus languages each have their own script, except Hindi and Marathi (both Devanagari).
The transcript's most frequent Unicode script among its letters picks the language; within a shared script, the
language whose corpus vocabulary (`avalign.training.corpus.lexicons`) contains most of the transcript's words wins.
"""

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path

import gradio as gr
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer

from avalign.modeling import (
    FastConformerForCTCTDT,
    FastConformerForImageAlignment,
    SpeechLLMForConditionalGeneration,
    ctc_greedy_decode,
    word_spans,
)
from avalign.training.corpus.lexicons import LEXICONS
from avalign.training.data.audio import TARGET_SAMPLING_RATE, AudioError, load_audio
from avalign.training.data.loaders import load_embedded
from avalign.training.evaluation.asr_error_rates import error_rates
from avalign.training.pipeline import fraction_dir
from avalign.training.publish import unified_folder
from avalign.training.roman.deromanize import Deromanizer, load_deromanizer
from avalign.training.roman.romanize import romanize_text
from avalign.training.schema import AUDIO_SUFFIXES, LANGUAGE_NAMES, LANGUAGES
from avalign.training.teacher import (
    MANIFEST_FILE,
    VisionTeacher,
    embed_images,
    first_row_per_id,
    load_image_embeddings,
    load_rgb_image,
)

logger = logging.getLogger(__name__)

SPACE_DIR = Path(__file__).resolve().parent
MAX_SECONDS = 30.0
MIN_SECONDS = 0.1
MAX_FILE_BYTES = 10 * 1024 * 1024
SILENCE_RMS = 1e-3  # about -60 dBFS
GALLERY_FILE, GALLERY_EMBEDDINGS_FILE, EXAMPLES_FILE = "gallery.json", "embeddings.safetensors", "examples.json"
ALIGN_DEFAULT = Path("align")
DEROMANIZER_DEFAULT = "deromanizer"
AUDIO_PROBLEMS = {
    "unreadable": "not a readable audio file (soundfile cannot decode it); upload WAV, FLAC, MP3 or OGG audio",
    "truncated": "the audio file is cut short: {detail}",
    "empty": "the audio file holds no samples",
    "non_finite": "the audio has invalid samples: {detail}",
    "too_short": "the clip is too short: {detail}",
    "too_long": "the clip is too long: {detail}; trim it to {max_seconds:g} s or less",
}


# ----------------------------------------------------------------------------- input checks
def rejected(message: str) -> gr.Error:
    """A message for the UI about bad input: logged as one line, shown without a traceback."""
    logger.warning("rejected: %s", message)
    return gr.Error(message, print_exception=False)


def read_upload(path: str | None) -> np.ndarray:
    """The uploaded or recorded clip as float32 mono 16 kHz (T,); raises `gr.Error` saying what is wrong."""
    if not path:
        raise rejected("No audio: record a clip or upload an audio file.")
    path = Path(path)
    name = path.name
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise rejected(f"{name}: not an audio file; accepted types are {' '.join(AUDIO_SUFFIXES)}.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise rejected(f"{name}: {size / 2**20:.1f} MB is over the {MAX_FILE_BYTES / 2**20:g} MB limit.")
    try:
        samples = load_audio(path, min_seconds=MIN_SECONDS, max_seconds=MAX_SECONDS, source=name)
    except AudioError as error:
        problem = AUDIO_PROBLEMS[error.reason].format(detail=error.detail, max_seconds=MAX_SECONDS)
        raise rejected(f"{name}: {problem}.") from error
    rms = float(np.sqrt(np.mean(np.square(samples))))
    if rms < SILENCE_RMS:
        raise rejected(f"{name}: the clip is silent (RMS {rms:.1e} is below {SILENCE_RMS:g}); record or upload speech.")
    return samples


# ----------------------------------------------------------------------------- language detection
def text_script(text: str) -> str | None:
    """The most frequent Unicode script among the letters and marks of `text` ("DEVANAGARI", "LATIN", ...)."""
    scripts = Counter(unicodedata.name(char, "?").split(" ")[0] for char in text if unicodedata.category(char)[0] in "LM")
    return scripts.most_common(1)[0][0] if scripts else None


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _strings(item)


@functools.cache
def lexicon_words(language: str) -> frozenset[str]:
    """Every word of the corpus lexicon of `language` (vocabulary and templates, slots removed)."""
    lexicon = LEXICONS[language]
    fields = [getattr(lexicon, field.name) for field in dataclasses.fields(lexicon) if field.name != "voice"]
    return frozenset(re.sub(r"\{\w+\}", " ", " ".join(_strings(fields))).split())


@functools.cache
def language_scripts() -> dict[str, str]:
    """Corpus language -> the script its lexicon is written in."""
    return {language: text_script(" ".join(lexicon_words(language))) for language in LANGUAGES}


def language_label(language: str) -> str:
    return f"{LANGUAGE_NAMES[language]} ({language})"


def describe_language(transcript: str, chosen: str = "auto") -> str:
    """The chosen language, or the one detected from the transcript's script (and vocabulary within a script)."""
    if chosen and chosen != "auto":
        return f"{language_label(chosen)}, chosen"
    script = text_script(transcript)
    if script is None:
        return "unknown: the transcript has no letters"
    candidates = [language for language, language_script in language_scripts().items() if language_script == script]
    if not candidates:
        return f"unknown: no corpus language is written in the {script.title()} script"
    if len(candidates) == 1:
        return f"{language_label(candidates[0])}, detected from the {script.title()} script"
    words = transcript.split()
    best = max(candidates, key=lambda language: sum(word in lexicon_words(language) for word in words))
    return f"{language_label(best)}, detected from the {script.title()} script and vocabulary (of {'/'.join(candidates)})"


# ----------------------------------------------------------------------------- word timestamps
def word_timestamps(tokenizer, token_ids, frames, durations, frame_seconds: float, audio_seconds: float) -> list:
    """[word, start s, end s] per word (`avalign.modeling.word_spans`): a token spans its frame and its predicted
    duration (at least one frame); ends are clipped to the audio."""
    ends = [frame + max(duration, 1) for frame, duration in zip(frames, durations)]
    return [[text, round(start * frame_seconds, 2), round(min(end * frame_seconds, audio_seconds), 2)]
            for text, start, end in word_spans(tokenizer, token_ids, frames, ends)]  # fmt: skip


# ----------------------------------------------------------------------------- gallery
@dataclasses.dataclass
class Gallery:
    """Images to retrieve: files, captions and ids, with their unit-norm teacher embeddings (N, E)."""

    files: list[Path]
    captions: list[str]
    image_ids: list[str]
    embeddings: torch.Tensor

    def __len__(self) -> int:
        return len(self.files)


def load_gallery(folder: str | os.PathLike) -> Gallery:
    """Read a gallery folder (see the module docstring); raises ValueError naming the file that is wrong."""
    folder = Path(folder)
    for name in (GALLERY_FILE, GALLERY_EMBEDDINGS_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"gallery {folder}: {name} is missing (build one with build_gallery)")
    images = json.loads((folder / GALLERY_FILE).read_text(encoding="utf-8"))["images"]
    embeddings = load_file(folder / GALLERY_EMBEDDINGS_FILE)["embeddings"]
    if embeddings.ndim != 2 or len(embeddings) != len(images) or not images:
        raise ValueError(
            f"gallery {folder}: {GALLERY_EMBEDDINGS_FILE} has shape {tuple(embeddings.shape)} but {GALLERY_FILE} "
            f"lists {len(images)} images; expected ({len(images)}, E) with at least one image"
        )
    files = [folder / image["file"] for image in images]
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise ValueError(f"gallery {folder}: {len(missing)} image file(s) of {GALLERY_FILE} are missing: {missing[:5]}")
    return Gallery(
        files=files,
        captions=[image.get("caption", "") for image in images],
        image_ids=[image["image_id"] for image in images],
        embeddings=F.normalize(embeddings.float(), dim=-1),
    )


def teacher_embeddings(run_dir: Path, images):
    """The vision-teacher embedding cache of a run, holding every `image_id` of `images` (a dataset with
    `image_id` and `image`): read from RUN_DIR/embeddings, or computed with RUN_DIR/teacher into that cache."""
    cache_dir = run_dir / "embeddings"
    if (cache_dir / MANIFEST_FILE).exists():
        cache = load_image_embeddings(cache_dir)
        if all(image_id in cache for image_id in images["image_id"]):
            return cache
    if not (run_dir / "teacher").is_dir():
        raise ValueError(f"run {run_dir}: embeddings/ lacks gallery images and there is no teacher/ to embed them")
    return embed_images(VisionTeacher(run_dir / "teacher", device="cpu"), images, cache_dir)


def build_gallery(
    run_dir: str | os.PathLike, output_dir: str | os.PathLike, max_images: int = 48, split: str = "test"
) -> Path:
    """Write a gallery folder from the first `max_images` distinct images of the run's corpus `split`.

    Images without a usable picture or embedding are left out, counted in `gallery.json` ("skipped") and logged.
    """
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    dataset = load_embedded(run_dir / "corpus")[split]
    first_rows = [row for image_id, row in first_row_per_id(dataset["image_id"]).items() if image_id][:max_images]
    images = dataset.select(first_rows).select_columns(["image_id", "image", "image_caption"])
    cache = teacher_embeddings(run_dir, images)
    output_dir.mkdir(parents=True, exist_ok=True)
    entries, skipped = [], {}
    for row in images:
        image_id = row["image_id"]
        if image_id not in cache:
            skipped[image_id] = cache.skipped.get(image_id, "no teacher embedding")
            continue
        load_rgb_image(row["image"]).save(output_dir / f"{image_id}.png")
        entries.append({"file": f"{image_id}.png", "caption": row["image_caption"], "image_id": image_id})
    if skipped:
        logger.warning("gallery: skipped %d of %d images: %s", len(skipped), len(images), list(skipped.items())[:5])
    embeddings = cache.lookup([entry["image_id"] for entry in entries])  # (N, E)
    save_file({"embeddings": embeddings.contiguous()}, output_dir / GALLERY_EMBEDDINGS_FILE)
    gallery = {"teacher": cache.teacher, "images": entries, "skipped": skipped}
    (output_dir / GALLERY_FILE).write_text(json.dumps(gallery, indent=1, ensure_ascii=False), encoding="utf-8")
    return output_dir


@dataclasses.dataclass
class Example:
    """A corpus clip with what was said in it ("" when not known)."""

    path: Path
    transcript: str = ""
    language: str = ""


def write_examples(
    run_dir: str | os.PathLike, output_dir: str | os.PathLike, per_language: int = 1, split: str = "test"
) -> list[Example]:
    """Write the first `per_language` clips of each language of the run's corpus `split` as audio files, and
    `examples.json` ({file: {"transcript", "language"}}) with what each clip says."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    columns = ["audio", "language", "utterance_id", "transcript"]
    dataset = load_embedded(Path(run_dir) / "corpus")[split].select_columns(columns)
    taken, examples = Counter(), []
    for row in dataset:
        if taken[row["language"]] < per_language:
            taken[row["language"]] += 1
            suffix = Path(row["audio"]["path"] or "").suffix or ".flac"  # the embedded corpus stores FLAC bytes
            path = output_dir / f"{row['utterance_id']}{suffix}"
            path.write_bytes(row["audio"]["bytes"])
            examples.append(Example(path, row["transcript"], row["language"]))
    listing = {example.path.name: {"transcript": example.transcript, "language": example.language}
               for example in examples}  # fmt: skip
    (output_dir / EXAMPLES_FILE).write_text(json.dumps(listing, indent=1, ensure_ascii=False), encoding="utf-8")
    return examples


def load_examples(folder: str | os.PathLike | None) -> list[Example]:
    """The audio clips of an examples folder (none when no folder is given): those its `examples.json` lists, in its
    order and with their transcript and language, then any other clip (sorted, without a transcript)."""
    if not folder:
        return []
    folder = Path(folder)
    listing_file = folder / EXAMPLES_FILE
    listing = json.loads(listing_file.read_text(encoding="utf-8")) if listing_file.is_file() else {}
    clips = {path.name: path for path in sorted(folder.iterdir()) if path.suffix.lower() in AUDIO_SUFFIXES}
    missing = [name for name in listing if name not in clips]
    if missing:
        raise ValueError(f"examples {folder}: {EXAMPLES_FILE} lists {len(missing)} missing clip(s): {missing[:5]}")
    names = [*listing, *(name for name in clips if name not in listing)]
    return [Example(clips[name], **listing.get(name, {})) for name in names]


def file_digest(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- the Space
def audio_features(feature_extractor, samples: np.ndarray):
    """(T,) samples -> a batch of one: input_features (1, T_f, num_mel_bins) and attention_mask (1, T_f)."""
    return feature_extractor(
        [samples], sampling_rate=TARGET_SAMPLING_RATE, return_attention_mask=True, return_tensors="pt"
    )


@dataclasses.dataclass
class Decoding:
    """One clip through one stage-3 model: TDT and CTC transcripts, word timestamps [[word, start s, end s]] (TDT)."""

    tdt: str
    ctc: str
    words: list


@dataclasses.dataclass
class AsrSystem:
    """A stage-3 model with its feature extractor and tokenizer."""

    model: FastConformerForCTCTDT
    feature_extractor: object  # ParakeetFeatureExtractor
    tokenizer: object  # ParakeetTokenizer

    @classmethod
    def load(cls, name_or_path, option: str) -> "AsrSystem":
        return cls(
            model=load_stage_model(name_or_path, FastConformerForCTCTDT, option),
            feature_extractor=AutoFeatureExtractor.from_pretrained(name_or_path),
            tokenizer=AutoTokenizer.from_pretrained(name_or_path),
        )

    @property
    def targets(self) -> str:
        return getattr(self.model.config, "targets", "native")

    @torch.inference_mode()
    def decode(self, samples: np.ndarray) -> Decoding:
        """(T,) 16 kHz samples -> greedy TDT and CTC transcripts of one encoder pass, and the TDT word timestamps."""
        model, inputs = self.model, audio_features(self.feature_extractor, samples)
        outputs = model(inputs.input_features, attention_mask=inputs.attention_mask)  # one encoder pass, two decoders
        tdt = model.tdt_greedy_decode(outputs.encoder_states, outputs.encoder_lengths)
        ctc = ctc_greedy_decode(outputs.ctc_logits, outputs.encoder_lengths, model.config.blank_token_id)
        tdt_text, ctc_text = (self.tokenizer.decode(result.sequences[0], group_tokens=False) for result in (tdt, ctc))
        frame_seconds = (
            self.feature_extractor.hop_length * model.config.encoder_config.subsampling_factor / TARGET_SAMPLING_RATE
        )
        words = word_timestamps(
            self.tokenizer, tdt.sequences[0], tdt.frame_timestamps[0], tdt.token_durations[0],
            frame_seconds, len(samples) / TARGET_SAMPLING_RATE,
        )  # fmt: skip
        return Decoding(tdt_text, ctc_text, words)


@dataclasses.dataclass
class Space:
    """The loaded models, gallery and examples, and the endpoints."""

    asr: AsrSystem  # the aligned system (stage 1 -> 2 -> 3)
    baseline: AsrSystem | None = None  # stage 1 -> 3, for the comparison
    comparison_disabled: str = ""  # why the comparison is off; "" when it is on
    align_model: FastConformerForImageAlignment | None = None
    align_feature_extractor: object = None
    gallery: Gallery | None = None
    retrieval_disabled: str = ""  # why retrieval is off; "" when it is on
    examples: list[Example] = dataclasses.field(default_factory=list)
    workdir: object = None  # a TemporaryDirectory (gallery and examples built from a run) kept alive with the Space
    deromanizer: Deromanizer | None = None  # for a model with romanized targets
    unified: SpeechLLMForConditionalGeneration | None = None  # speech -> LLM -> native script; None: no such tab

    @property
    def romanized(self) -> bool:
        return self.asr.targets == "roman"

    @functools.cached_property
    def examples_by_digest(self) -> dict[str, Example]:
        return {file_digest(example.path): example for example in self.examples}

    def example_of(self, audio: str | None) -> Example | None:
        """The corpus example whose file has the same bytes as `audio` (None for any other clip)."""
        return self.examples_by_digest.get(file_digest(audio)) if audio else None

    def reference_transcript(self, audio: str | None) -> str:
        """What the clip says when it is a corpus example; "" otherwise."""
        example = self.example_of(audio)
        return example.transcript if example else ""

    def native_script(self, transcript: str, language: str) -> str:
        """The transcript in its native script: as it is for a native-target model, de-romanized for a roman one."""
        if not self.romanized:
            return transcript
        if self.deromanizer is None:
            return "(no de-romanizer loaded: start the Space with --deromanizer)"
        if not language or language == "auto":
            return "(choose the language to see the native script: romanized text does not tell it)"
        return self.deromanizer.deromanize([transcript], [language])[0]

    def transcribe(self, audio: str | None, language: str = "auto"):
        """Audio file -> TDT transcript, CTC transcript, language, word timestamps [[word, start s, end s]], and the
        TDT transcript in the native script (de-romanized when the model writes romanized text)."""
        decoding = self.asr.decode(read_upload(audio))
        native = self.native_script(decoding.tdt, language)
        return decoding.tdt, decoding.ctc, describe_language(decoding.tdt, language), decoding.words, native

    def transcribe_unified(self, audio: str | None, language: str) -> str:
        """Audio file -> the native-script text the unified model writes for `language` (given, not detected)."""
        if self.unified is None:
            raise rejected("The unified model is off: start the Space with --unified-model (AVALIGN_UNIFIED_MODEL).")
        if language not in self.unified.config.languages:
            raise rejected(f"{language!r}: the unified model writes {', '.join(self.unified.config.languages)} only.")
        return self.unified.generate(audio=[read_upload(audio)], languages=[language])[0]

    def compare(self, audio: str | None):
        """Audio file -> the reference transcript ("" unless the clip is a corpus example), the aligned system's TDT
        and CTC transcripts, the baseline's, and [[system, CER (TDT), CER (CTC)]] against the reference (no rows
        without one)."""
        if self.comparison_disabled:
            raise rejected(self.comparison_disabled)
        samples = read_upload(audio)
        decodings = {"aligned": self.asr.decode(samples), "baseline": self.baseline.decode(samples)}
        example = self.example_of(audio)
        reference = example.transcript if example else ""
        scores = self.character_error_rates(decodings, example) if reference else []
        aligned, baseline = decodings.values()
        return reference, aligned.tdt, aligned.ctc, baseline.tdt, baseline.ctc, scores

    def character_error_rates(self, decodings: dict[str, Decoding], example: Example) -> list:
        """[[system, CER (TDT), CER (CTC)]] against the example's transcript, romanized for a romanized-target model."""
        reference = romanize_text(example.transcript, example.language) if self.romanized else example.transcript
        cer = lambda hypothesis: round(error_rates([hypothesis], [reference])["cer"], 4)  # noqa: E731
        return [[system, cer(decoding.tdt), cer(decoding.ctc)] for system, decoding in decodings.items()]

    @torch.inference_mode()
    def retrieve_images(self, audio: str | None, top_k: int = 5):
        """Audio file -> the `top_k` gallery images closest to the audio embedding, and [[rank, image_id, caption,
        cosine]]."""
        if self.retrieval_disabled:
            raise rejected(self.retrieval_disabled)
        samples = read_upload(audio)
        inputs = audio_features(self.align_feature_extractor, samples)
        audio_embeds, _ = self.align_model.embed_audio(inputs.input_features, inputs.attention_mask)  # (1, E)
        cosine = (audio_embeds @ self.gallery.embeddings.T)[0]  # (N,)
        scores, indices = cosine.topk(min(int(top_k), len(self.gallery)))
        gallery, table = [], []
        for rank, (score, index) in enumerate(zip(scores.tolist(), indices.tolist()), start=1):
            caption = self.gallery.captions[index]
            gallery.append((str(self.gallery.files[index]), f"{rank}. {caption} ({score:.3f})"))
            table.append([rank, self.gallery.image_ids[index], caption, round(score, 4)])
        return gallery, table


def load_stage_model(name_or_path, expected_class, role: str):
    model = AutoModel.from_pretrained(name_or_path)
    if not isinstance(model, expected_class):
        raise ValueError(f"{role} {name_or_path}: a {type(model).__name__}, expected a {expected_class.__name__}")
    return model.eval()


def is_run_dir(path: str) -> bool:
    return (Path(path) / "asr").is_dir()


def run_model_dir(system: str, targets: str) -> Path:
    """A run's stage-3 model folder of `system` ("aligned" or "baseline") fine-tuned on all its transcripts."""
    return Path("asr") / fraction_dir(system, 1.0, targets)


def load_space(args: argparse.Namespace) -> Space:
    """Load the models (once), the gallery and the examples; in run-directory mode fill in the defaults from the run."""
    asr_path, baseline_path, deromanizer = args.model, args.baseline_model, args.deromanizer
    align_path, gallery_dir, examples, workdir = args.align_model, args.gallery, load_examples(args.examples), None
    unified_path = args.unified_model
    if is_run_dir(args.model):
        run_dir = Path(args.model)
        asr_path = run_dir / run_model_dir("aligned", args.targets)
        if not asr_path.is_dir():
            found = sorted(path.name for path in (run_dir / "asr").iterdir())
            missing = asr_path.relative_to(run_dir)
            raise ValueError(f"run {run_dir}: no {missing} model; found {found}: pass one as --model")
        run_baseline = run_dir / run_model_dir("baseline", args.targets)
        baseline_path = baseline_path or (run_baseline if run_baseline.is_dir() else None)
        if args.targets == "roman" and not deromanizer and (run_dir / DEROMANIZER_DEFAULT).is_dir():
            deromanizer = f"char:{run_dir / DEROMANIZER_DEFAULT}"
        align_path = align_path or run_dir / ALIGN_DEFAULT
        unified_path = unified_path or unified_folder(run_dir)
        workdir = tempfile.TemporaryDirectory(prefix="avalign-space-")
        gallery_dir = gallery_dir or build_gallery(run_dir, Path(workdir.name) / "gallery")
        examples = examples or write_examples(run_dir, Path(workdir.name) / "examples")
    space = Space(
        asr=AsrSystem.load(asr_path, "--model"),
        examples=examples,
        workdir=workdir,
        deromanizer=load_deromanizer(deromanizer) if deromanizer else None,
        unified=SpeechLLMForConditionalGeneration.from_pretrained(unified_path) if unified_path else None,
    )
    enable_comparison(space, baseline_path)
    enable_retrieval(space, align_path, gallery_dir)
    return space


def enable_comparison(space: Space, baseline_path) -> None:
    """Load the baseline model, or say in `space.comparison_disabled` why there is none."""
    if not baseline_path:
        space.comparison_disabled = (
            "Aligned vs baseline is disabled: no baseline model. Start the Space with --baseline-model (a baseline "
            "stage-3 folder or Hub id; on the Hub, the AVALIGN_BASELINE_MODEL variable), or with --model pointing at "
            f"a pipeline run directory that has {run_model_dir('baseline', space.asr.targets).as_posix()}/."
        )
        return
    space.baseline = AsrSystem.load(baseline_path, "--baseline-model")
    if space.baseline.targets != space.asr.targets:
        raise ValueError(
            f"--baseline-model {baseline_path} writes {space.baseline.targets} targets but --model writes "
            f"{space.asr.targets} targets: compare two models of the same kind"
        )


def enable_retrieval(space: Space, align_path, gallery_dir) -> None:
    """Load the alignment model and the gallery, or say in `space.retrieval_disabled` what is missing."""
    missing = [option for option, value in (("--align-model", align_path), ("--gallery", gallery_dir)) if not value]
    if missing:
        space.retrieval_disabled = (
            f"Image retrieval is disabled: start the Space with {' and '.join(missing)} "
            "(or with --model pointing at a pipeline run directory)."
        )
        return
    space.align_model = load_stage_model(align_path, FastConformerForImageAlignment, "--align-model")
    space.align_feature_extractor = AutoFeatureExtractor.from_pretrained(align_path)
    space.gallery = load_gallery(gallery_dir)
    model_dim, gallery_dim = space.align_model.config.image_embedding_dim, space.gallery.embeddings.shape[1]
    if model_dim != gallery_dim:
        raise ValueError(
            f"--align-model {align_path} embeds into {model_dim} dimensions but gallery {gallery_dir} holds "
            f"{gallery_dim}-dimensional embeddings: they come from different vision teachers"
        )


# ----------------------------------------------------------------------------- UI
def speech_input() -> gr.Audio:
    return gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech")


def reference_box() -> gr.Textbox:
    return gr.Textbox(label="Reference transcript (corpus clips)", interactive=False)


def corpus_examples(space: Space, audio: gr.Audio, reference: gr.Textbox) -> None:
    """The corpus clips with what they say; `reference` follows the audio (empty for a clip of one's own)."""
    if space.examples:
        rows = [[str(example.path), example.transcript] for example in space.examples]
        gr.Examples(rows, inputs=[audio, reference], label="Corpus clips")
    audio.change(space.reference_transcript, audio, reference, api_visibility="private", queue=False)


def transcribe_tab(space: Space) -> None:
    with gr.Row():
        with gr.Column():
            audio = speech_input()
            language = gr.Dropdown(
                [("auto (detect from the script)", "auto")] + [(language_label(code), code) for code in LANGUAGES],
                value="auto", label="Language",
            )  # fmt: skip
            button = gr.Button("Transcribe", variant="primary")
            reference = reference_box()
        with gr.Column():
            script = " (romanized)" if space.romanized else ""
            tdt_text = gr.Textbox(label=f"Transcript (TDT){script}", interactive=False)
            native = gr.Textbox(label="Native script (de-romanized)", interactive=False, visible=space.romanized)
            ctc_text = gr.Textbox(label=f"Transcript (CTC){script}", interactive=False)
            detected = gr.Textbox(label="Language (detected or chosen)", interactive=False)
    words = gr.Dataframe(headers=["word", "start (s)", "end (s)"], label="Word timestamps (TDT)", interactive=False)
    corpus_examples(space, audio, reference)
    button.click(space.transcribe, [audio, language], [tdt_text, ctc_text, detected, words, native])


def compare_tab(space: Space) -> None:
    gr.Markdown(
        space.comparison_disabled
        or "The same clip through the aligned system (pretrain → align → fine-tune) and the baseline (pretrain → "
        "fine-tune), both fine-tuned on the same transcripts; for a corpus clip, their character error rates."
    )
    script = " (romanized)" if space.romanized else ""
    with gr.Row():
        with gr.Column():
            audio = speech_input()
            button = gr.Button("Transcribe with both", variant="primary")
        with gr.Column():
            reference = reference_box()
            scores = gr.Dataframe(
                headers=["system", "CER (TDT)", "CER (CTC)"], interactive=False,
                label=f"Character error rate against the reference{script}",
            )  # fmt: skip
    transcripts = []
    with gr.Row():
        for system in ("Aligned", "Baseline"):
            with gr.Column():
                transcripts += [gr.Textbox(label=f"{system}: TDT{script}", interactive=False),
                                gr.Textbox(label=f"{system}: CTC{script}", interactive=False)]  # fmt: skip
    corpus_examples(space, audio, reference)
    button.click(space.compare, [audio], [reference, *transcripts, scores])


def retrieval_tab(space: Space) -> None:
    if space.retrieval_disabled:
        gr.Markdown(space.retrieval_disabled)
    with gr.Row():
        with gr.Column():
            audio = speech_input()
            gallery_size = len(space.gallery) if space.gallery else 10
            top_k = gr.Slider(1, gallery_size, value=min(5, gallery_size), step=1, label="Images to show (k)")
            button = gr.Button("Find the pictures", variant="primary")
            reference = reference_box()
        with gr.Column():
            images = gr.Gallery(label="Closest gallery images", columns=3)
    scores = gr.Dataframe(headers=["rank", "image_id", "caption", "cosine"], label="Scores", interactive=False)
    corpus_examples(space, audio, reference)
    button.click(space.retrieve_images, [audio, top_k], [images, scores])


def unified_tab(space: Space) -> None:
    gr.Markdown(
        "Zero-AVSR's unified model: the romanizer's frames go straight into a causal LM (LoRA) that writes the native "
        "script of the chosen language, including one whose speech it never heard in training."
    )
    languages = space.unified.config.languages
    with gr.Row():
        with gr.Column():
            audio = speech_input()
            language = gr.Dropdown([(f"{names['name']} ({code})", code) for code, names in languages.items()],
                                   value=next(iter(languages)), label="Language (given to the model)")  # fmt: skip
            button = gr.Button("Write the native script", variant="primary")
            reference = reference_box()
        with gr.Column():
            native = gr.Textbox(label="Native script (unified model)", interactive=False)
    corpus_examples(space, audio, reference)
    button.click(space.transcribe_unified, [audio, language], [native])


def build_demo(args: argparse.Namespace) -> gr.Blocks:
    """The Blocks UI over models loaded once; endpoints /transcribe, /compare and /retrieve_images (and
    /transcribe_unified with a unified model)."""
    space = load_space(args)
    limits = f"Clips up to {MAX_SECONDS:g} s and {MAX_FILE_BYTES / 2**20:g} MB ({', '.join(AUDIO_SUFFIXES)})."
    with gr.Blocks(title="avalign: picture-prompted speech recognition") as demo:
        gr.Markdown(
            "# avalign\nSpeech recognition for low-resource languages, with audio-image alignment as a "
            f"continued-pretraining stage (FastConformer, CTC + TDT). {limits}"
        )
        with gr.Tab("Transcribe"):
            transcribe_tab(space)
        with gr.Tab("Aligned vs baseline"):
            compare_tab(space)
        with gr.Tab("Image retrieval"):
            retrieval_tab(space)
        if space.unified is not None:
            with gr.Tab("Native script (unified model)"):
                unified_tab(space)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    environ = os.environ.get
    default_folder = lambda name: str(SPACE_DIR / name) if (SPACE_DIR / name).is_dir() else None  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=environ("AVALIGN_MODEL"), help="run directory, stage-3 folder or Hub id")
    parser.add_argument("--baseline-model", default=environ("AVALIGN_BASELINE_MODEL"),
                        help="baseline stage-3 folder or Hub id (no alignment stage)")  # fmt: skip
    parser.add_argument("--align-model", default=environ("AVALIGN_ALIGN_MODEL"), help="stage-2 folder or Hub id")
    parser.add_argument("--gallery", default=environ("AVALIGN_GALLERY") or default_folder("gallery"),
                        help="a gallery folder (see build_gallery)")  # fmt: skip
    parser.add_argument("--examples", default=environ("AVALIGN_EXAMPLES") or default_folder("examples"),
                        help="a folder of audio clips and examples.json (see write_examples)")  # fmt: skip
    parser.add_argument("--targets", choices=["native", "roman"], default=environ("AVALIGN_TARGETS", "native"),
                        help="with a run directory: its native-script or its romanized-target ASR model")  # fmt: skip
    parser.add_argument("--deromanizer", default=environ("AVALIGN_DEROMANIZER"),
                        help="for a romanized-target model: char:FOLDER (trained transliterator) or lm:MODEL_ID")  # fmt: skip
    parser.add_argument("--unified-model", default=environ("AVALIGN_UNIFIED_MODEL"),
                        help="a unified model (speech -> LLM -> native script) folder or Hub id")  # fmt: skip
    parser.add_argument("--host", default=environ("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(environ("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model is required (or set AVALIGN_MODEL)")
    return args


def main(argv=None, **launch_kwargs) -> gr.Blocks:
    """Build and launch the Space; `launch_kwargs` go to `Blocks.launch` (e.g. `prevent_thread_lock=True`)."""
    args = parse_args(argv)
    demo = build_demo(args)
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=MAX_FILE_BYTES,
        allowed_paths=[path for path in (args.gallery, args.examples) if path],
        **launch_kwargs,
    )
    return demo


if __name__ == "__main__":
    main()
