"""The embedded picture-prompted corpus: rendered scenes, spoken descriptions in 10 languages, 6 splits.

    python -m avalign.training.synth --preset {smoke,demo,full} --output-dir DIR [--languages hi bn] [--seed 0]

Writes `DIR` (`DatasetDict.save_to_disk`), the dataset card `DIR/README.md` and `DIR/stats.json`.

Speech is synthesised in-process with espeak-ng (the `espeakng-loader` wheel, through ctypes) at 22050 Hz and
resampled to 16 kHz. A speaker is a (voice variant, pitch, rate) combination; the out-of-domain test set uses
held-out variants, held-out templates, added noise and synthetic reverberation. Splits (sizes per language):

    unlabeled   audio only (no image, transcript "")
    paired      audio + image, transcript ""            several utterances per image, different speakers
    train       audio + image + transcript              `train_fraction`: nested 10% < 25% < 100% subsets
    dev, test   in-domain, images unseen in training
    test_ood    unseen templates, unseen speakers, noise + reverberation, unseen images
    dev_ood     the out-of-domain condition of test_ood for model selection (its own scenes and sentences)

`reference_transcript` holds the spoken text of every row, for analysis only: the method does not use it for
`unlabeled` and `paired`. Everything is a function of the seed: each (split, language) block draws from its own
random generator and restarts espeak-ng, so a block is the same whatever other blocks are generated.
"""

import _ctypes
import argparse
import ctypes
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import espeakng_loader
import numpy as np
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict, Features, Image, Value, concatenate_datasets
from tqdm.auto import tqdm

from avalign.hub_cards import render

from ..data.audio import TARGET_SAMPLING_RATE, add_noise, resample, reverberate
from ..schema import LANGUAGE_NAMES, LANGUAGES, OUT_OF_DOMAIN_SPLITS, SPLITS, TRAIN_FRACTIONS, TRANSCRIBED_SPLITS
from .lexicons import LEXICONS
from .scenes import BACKGROUNDS, COLOURS, KINDS, POSITIONS, Scene, png_bytes, render_scene, sample_scene



# espeak-ng voice variants (espeak-ng-data/voices/!v); the held-out ones are heard only in test_ood and dev_ood
IN_DOMAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4")
HELD_OUT_VARIANTS = ("m7", "m8", "f5")
PITCHES = (30, 40, 50, 60, 70)  # espeak-ng pitch, 0-99
RATES = (130, 150, 170, 190)  # words per minute

# `audio` is written as its {"bytes", "path"} storage and cast to `AUDIO` afterwards: datasets' Audio encoder
# needs torchcodec even for bytes that are already encoded
AUDIO = Audio(sampling_rate=TARGET_SAMPLING_RATE, decode=False)
FEATURES = Features(
    {
        "audio": {"bytes": Value("binary"), "path": Value("string")},
        "language": Value("string"),
        "transcript": Value("string"),
        "reference_transcript": Value("string"),
        "image_id": Value("string"),
        "image": Image(),
        "image_caption": Value("string"),
        "speaker": Value("string"),
        "duration": Value("float64"),
        "utterance_id": Value("string"),
        "template_id": Value("string"),
        "train_fraction": Value("float64"),
    }
)


@dataclass(frozen=True)
class SynthConfig:
    """Corpus size (utterances per split and language) and generation settings."""

    name: str
    unlabeled: int
    paired: int
    train: int
    dev: int
    test: int
    test_ood: int
    dev_ood: int = 0
    utterances_per_image: int = 3
    image_size: int = 128
    in_domain_speakers: int = 24  # per language
    held_out_speakers: int = 6  # per language, test_ood and dev_ood only
    snr_db: tuple[float, float] = (10.0, 25.0)
    rt60_seconds: tuple[float, float] = (0.2, 0.6)

    def utterances(self, split: str) -> int:
        return getattr(self, split)


PRESETS = {
    "smoke": SynthConfig("smoke", unlabeled=4, paired=6, train=10, dev=3, test=3, test_ood=3, dev_ood=3),
    "demo": SynthConfig("demo", unlabeled=1200, paired=900, train=300, dev=40, test=40, test_ood=40, dev_ood=40),
    "full": SynthConfig("full", unlabeled=4800, paired=3600, train=1200, dev=100, test=200, test_ood=200, dev_ood=100),
}  # fmt: skip


@dataclass(frozen=True)
class Speaker:
    id: str  # "hi-spk07"
    voice: str  # espeak-ng voice + variant, "hi+m3"
    pitch: int
    rate: int


def make_speakers(language: str, config: SynthConfig, seed: int) -> tuple[list[Speaker], list[Speaker]]:
    """(in-domain, held-out) speakers of a language: distinct (variant, pitch, rate) combinations; the held-out
    ones use variants that no in-domain speaker has."""
    rng = np.random.default_rng([seed, LANGUAGES.index(language), 1000])

    def draw(variants: tuple[str, ...], count: int, first_index: int) -> list[Speaker]:
        combos = [(v, p, r) for v in variants for p in PITCHES for r in RATES]
        chosen = rng.choice(len(combos), size=count, replace=False)
        return [
            Speaker(f"{language}-spk{first_index + i:02d}", f"{LEXICONS[language].voice}+{v}", p, r)
            for i, (v, p, r) in enumerate(combos[j] for j in chosen)
        ]

    in_domain = draw(IN_DOMAIN_VARIANTS, config.in_domain_speakers, 0)
    return in_domain, draw(HELD_OUT_VARIANTS, config.held_out_speakers, config.in_domain_speakers)


# ---------------------------------------------------------------- espeak-ng

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_BUFFER_MS = 1000  # audio handed to the callback per call
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_RATE, _PITCH = 1, 3
_dlclose = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary


class Espeak:
    """espeak-ng in this process (synchronous mode: the callback collects int16 samples). Not thread-safe: use
    the module-level `ESPEAK`.

    espeak-ng keeps synthesis state between utterances (pitch-flutter phase, gain control) that no API call
    resets, so `reset` reloads the shared library: what follows a reset depends only on its inputs (the noise of
    breathy variants is seeded per utterance).
    """

    def __init__(self):
        self._library = None
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)
        self.sampling_rate = 0

    def _collect(self, samples, count, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0 = continue

    def reset(self):
        if self._library is not None:
            self._library.espeak_Terminate()
            _dlclose(self._library._handle)
        library = ctypes.CDLL(espeakng_loader.get_library_path())
        library.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        data_path = espeakng_loader.get_data_path().encode()
        self.sampling_rate = library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, _INITIALIZE_DONT_EXIT
        )
        if self.sampling_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with the data at {data_path.decode()}")
        library.espeak_SetSynthCallback(self._callback)
        self._library = library

    def synthesize(self, text: str, speaker: Speaker, seed: int) -> np.ndarray:
        """(T,) int16 samples at `self.sampling_rate` of `text` read by `speaker`."""
        if self._library is None:
            self.reset()
        library = self._library
        if library.espeak_SetVoiceByName(speaker.voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {speaker.voice!r} (speaker {speaker.id})")
        library.espeak_SetParameter(_RATE, speaker.rate, 0)
        library.espeak_SetParameter(_PITCH, speaker.pitch, 0)
        library.espeak_ng_SetRandSeed(seed)  # otherwise seeded from the clock at initialisation
        encoded = text.encode()
        self._chunks.clear()
        status = library.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        library.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise RuntimeError(f"espeak-ng produced no audio for {text!r} with {speaker.voice} (status {status})")
        return np.concatenate(self._chunks)


ESPEAK = Espeak()


# ---------------------------------------------------------------- audio


def flac_bytes(samples: np.ndarray) -> bytes:
    """16-bit FLAC at 16 kHz of (T,) float samples in [-1, 1]."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), TARGET_SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def speak(text: str, speaker: Speaker, rng: np.random.Generator, config: SynthConfig, degrade: bool) -> np.ndarray:
    """(T,) float32 speech at 16 kHz; `degrade` adds reverberation and noise (the out-of-domain condition)."""
    samples = ESPEAK.synthesize(text, speaker, seed=int(rng.integers(2**31))).astype(np.float32) / 32768.0
    samples = resample(samples, ESPEAK.sampling_rate, TARGET_SAMPLING_RATE)
    if degrade:
        samples = add_noise(reverberate(samples, rng, config.rt60_seconds), rng, config.snr_db)
    return samples


# ---------------------------------------------------------------- corpus


def image_caption(scene: Scene) -> str:
    """English structured description for the vision teacher: "two red circles on the left, sky blue background"."""
    english = LEXICONS["en"]
    objects = english.noun_phrase(scene.kind, scene.colour, scene.count)
    return f"{objects} {english.positions[scene.position]}, {scene.background} background"


def assign_train_fractions(rows: list[dict], rng: np.random.Generator):
    """Give each row the smallest of `TRAIN_FRACTIONS` whose random nested subset holds it (10% < 25% < 100%)."""
    bounds = [math.ceil(fraction * len(rows)) for fraction in TRAIN_FRACTIONS]
    for rank, index in enumerate(rng.permutation(len(rows))):
        rows[index]["train_fraction"] = next(f for f, bound in zip(TRAIN_FRACTIONS, bounds) if rank < bound)


def generate_block(split: str, language: str, config: SynthConfig, seed: int, progress=None) -> list[dict]:
    """The rows of one split in one language. Scenes get `utterances_per_image` utterances by different speakers
    (one each, without an image, in `unlabeled`)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), LANGUAGES.index(language)])
    lexicon = LEXICONS[language]
    in_domain, held_out = make_speakers(language, config, seed)
    out_of_domain = split in OUT_OF_DOMAIN_SPLITS
    speakers = held_out if out_of_domain else in_domain
    template_ids = sorted(lexicon.ood_templates if out_of_domain else lexicon.templates)
    per_image = 1 if split == "unlabeled" else config.utterances_per_image
    ESPEAK.reset()
    rows = []
    for image_index in range(math.ceil(config.utterances(split) / per_image)):
        scene = sample_scene(rng)
        image_id, image = "", None
        if split != "unlabeled":
            image_id = f"{split}-{language}-img{image_index:05d}"
            image = {"bytes": png_bytes(render_scene(scene, rng, config.image_size)), "path": f"{image_id}.png"}
        count = min(per_image, config.utterances(split) - len(rows))
        for speaker_index in rng.choice(len(speakers), size=count, replace=False):
            speaker, template_id = speakers[speaker_index], str(rng.choice(template_ids))
            text = lexicon.sentence(template_id, scene)
            samples = speak(text, speaker, rng, config, degrade=out_of_domain)
            utterance_id = f"{split}-{language}-{len(rows):05d}"
            rows.append(
                {
                    "audio": {"bytes": flac_bytes(samples), "path": f"{utterance_id}.flac"},
                    "language": language,
                    "transcript": text if split in TRANSCRIBED_SPLITS else "",
                    "reference_transcript": text,
                    "image_id": image_id,
                    "image": image,
                    "image_caption": image_caption(scene) if image else "",
                    "speaker": speaker.id,
                    "duration": len(samples) / TARGET_SAMPLING_RATE,
                    "utterance_id": utterance_id,
                    "template_id": template_id,
                    "train_fraction": 1.0,
                }
            )
            if progress is not None:
                progress.update()
    if split == "train":
        assign_train_fractions(rows, rng)
    return rows


def generate_corpus(
    config: SynthConfig, languages: tuple[str, ...] = LANGUAGES, seed: int = 0, progress: bool = True
) -> DatasetDict:
    """All splits for `languages`, deterministic in `seed`."""
    unknown = [language for language in languages if language not in LEXICONS]
    if unknown:
        raise ValueError(f"unknown language code(s) {unknown}; available: {', '.join(LANGUAGES)}")
    total = sum(config.utterances(split) for split in SPLITS) * len(languages)
    with tqdm(total=total, desc=f"synthesising {config.name}", unit="utt", disable=not progress) as bar:
        # one Arrow table per block keeps only one block's rows in Python objects at a time
        return DatasetDict(
            {
                split: concatenate_datasets(
                    [
                        Dataset.from_list(generate_block(split, language, config, seed, bar), features=FEATURES)
                        for language in languages
                    ]
                ).cast_column("audio", AUDIO)
                for split in SPLITS
            }
        )


# ---------------------------------------------------------------- statistics and card


def _summary(languages, durations, image_ids, speakers) -> dict:
    return {
        "utterances": len(languages),
        "hours": round(float(np.sum(durations)) / 3600, 4),
        "images": len({image_id for image_id in image_ids if image_id}),
        "speakers": len(set(speakers)),
    }


def corpus_statistics(corpus: DatasetDict) -> dict:
    """{split: {language or "all": {"utterances", "hours", "images", "speakers"}}}."""
    statistics = {}
    for split, dataset in corpus.items():
        columns = {name: np.asarray(dataset[name]) for name in ("language", "duration", "image_id", "speaker")}
        per_language = {"all": _summary(*columns.values())}
        for language in dict.fromkeys(columns["language"]):
            keep = columns["language"] == language
            per_language[str(language)] = _summary(*(values[keep] for values in columns.values()))
        statistics[split] = per_language
    return statistics


def statistics_table(statistics: dict) -> str:
    """Markdown table: one row per split and language, then the split's total."""
    lines = ["| split | language | utterances | hours | images | speakers |", "|---|---|---:|---:|---:|---:|"]
    for split, per_language in statistics.items():
        for language, row in sorted(per_language.items(), key=lambda item: item[0] == "all"):
            name = "**all**" if language == "all" else language
            cells = [split, name, row["utterances"], f"{row['hours']:.3f}", row["images"], row["speakers"]]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def render_card(config: SynthConfig, languages: tuple[str, ...], seed: int, statistics: dict, seconds: float) -> str:
    """The dataset card (hub_cards/dataset_card.md.j2)."""
    example = Scene("circle", "red", 2, "left", "sky blue")
    examples = [
        {
            "code": code,
            "name": LANGUAGE_NAMES[code],
            "in_domain": LEXICONS[code].sentence("t1", example),
            "ood": LEXICONS[code].sentence("ood2", example),
        }
        for code in languages
    ]
    totals = {key: sum(split["all"][key] for split in statistics.values()) for key in ("utterances", "hours", "images")}
    return render(
        "dataset_card.md.j2",
        config=asdict(config),
        seed=seed,
        languages=examples,
        example_caption=image_caption(example),
        totals=totals,
        table=statistics_table(statistics),
        seconds=seconds,
        kinds=KINDS,
        colours=list(COLOURS),
        positions=list(POSITIONS),
        backgrounds=list(BACKGROUNDS),
        in_domain_variants=IN_DOMAIN_VARIANTS,
        held_out_variants=HELD_OUT_VARIANTS,
        pitches=PITCHES,
        rates=RATES,
        train_fractions=TRAIN_FRACTIONS,
    )


def write_corpus(
    output_dir: str | Path,
    preset: str = "demo",
    languages: tuple[str, ...] = LANGUAGES,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Generate the corpus into `output_dir` with its card (README.md) and stats.json; returns the statistics."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    config, output_dir = PRESETS[preset], Path(output_dir)
    start = time.perf_counter()
    corpus = generate_corpus(config, tuple(languages), seed, progress)
    corpus.save_to_disk(str(output_dir))
    seconds = time.perf_counter() - start
    statistics = corpus_statistics(corpus)
    stats = {
        "preset": preset,
        "config": asdict(config),
        "seed": seed,
        "languages": list(languages),
        "generation_seconds": round(seconds, 2),
        "splits": statistics,
    }
    (output_dir / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    card = render_card(config, tuple(languages), seed, statistics, seconds)
    (output_dir / "README.md").write_text(card, encoding="utf-8")
    return stats


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="demo")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--languages", nargs="+", choices=LANGUAGES, default=list(LANGUAGES), metavar="CODE",
        help=f"ISO 639-1 codes among {' '.join(LANGUAGES)} (default: all)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    stats = write_corpus(args.output_dir, args.preset, tuple(args.languages), args.seed)
    print(statistics_table(stats["splits"]))
    print(f"\n{args.preset}: generated in {stats['generation_seconds']:.1f} s -> {args.output_dir}")


if __name__ == "__main__":
    main()
