"""Logging for the stage scripts and the tools (pipeline, publish, evaluate_asr, synth, teacher, deromanize)."""

import logging


def setup_logging() -> None:
    """INFO to stderr with timestamps; the chatty libraries at WARNING."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("accelerate", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
