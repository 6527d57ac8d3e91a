"""The common schema every part of avalign.training shares: split names, languages, columns, transcript form.

Imports nothing from avalign: the corpus generator, the loaders, the stage scripts, evaluation and publishing all
import it (see DESIGN.md, Data).

Columns of every source (the embedded corpus, Vaani, FLEURS, a user's folder), `COMMON_FEATURES`: `audio`
(`Audio(decode=False)`: {"bytes", "path"}), `language` (ISO code), `transcript` (may be ""), `image_id` (may be ""),
`image` (`Image(decode=False)` or None), `speaker`, `duration` (seconds; None where the header cannot be read),
`utterance_id`. Vaani and FLEURS also keep the transcript as published in `raw_transcription`.
"""

import unicodedata

from datasets import Audio, Features, Image, Value

# ------------------------------------------------------------------------------------------------------ splits
# The method's splits, in the order the embedded corpus generates them (each split's random generator is seeded by
# its position here, so dev_ood, added last, changed no other split)
SPLITS = ("unlabeled", "paired", "train", "dev", "test", "test_ood", "dev_ood")
TRAIN_SIDE_SPLITS = ("unlabeled", "paired", "train")  # what stages 1-3 and the de-romanizer may learn from
TEST_SIDE_SPLITS = ("dev", "test", "test_ood", "dev_ood")
TRANSCRIBED_SPLITS = ("train", "dev", "test", "test_ood", "dev_ood")
OUT_OF_DOMAIN_SPLITS = ("test_ood", "dev_ood")  # held-out speakers and templates, noise and reverberation
TRAIN_FRACTIONS = (0.1, 0.25, 1.0)  # `train_fraction`: nested subsets of `train` for the low-resource ablation

# --------------------------------------------------------------------------------------------------- languages
LANGUAGES = ("hi", "bn", "ta", "te", "mr", "kn", "gu", "ml", "pa", "en")  # of the embedded corpus
LANGUAGE_NAMES = {
    "hi": "Hindi", "bn": "Bengali", "ta": "Tamil", "te": "Telugu", "mr": "Marathi", "kn": "Kannada",
    "gu": "Gujarati", "ml": "Malayalam", "pa": "Punjabi", "en": "English",
}  # fmt: skip

# ----------------------------------------------------------------------------------------------------- columns
COMMON_FEATURES = Features({
    "audio": Audio(decode=False),
    "language": Value("string"),
    "transcript": Value("string"),
    "image_id": Value("string"),
    "image": Image(decode=False),
    "speaker": Value("string"),
    "duration": Value("float64"),
    "utterance_id": Value("string"),
})  # fmt: skip
RAW_TRANSCRIPT_FEATURES = Features({**COMMON_FEATURES, "raw_transcription": Value("string")})
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus")


def normalize_text(text: str | None) -> str:
    """The stored form of a transcript: Unicode NFC, whitespace runs collapsed to one space, stripped. (Scoring
    normalises further, alike on both sides: `evaluation.asr_error_rates.normalize_transcript`.)"""
    return " ".join(unicodedata.normalize("NFC", text or "").split())
