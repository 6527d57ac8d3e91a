"""Issue 20, session timing: the baseline encoder's zero-shot romanizer and unified model trained beside the roman
pipeline's aligned ones (a second 1-thread process on the second core), with the very stages and arguments the
pipeline runs (`pipeline.run_zero_shot`); the pipeline then finds them finished and evaluates."""

from pathlib import Path

from avalign.training import pipeline
from avalign.training.logs import setup_logging

setup_logging()
run = pipeline.Pipeline("demo", Path("runs/demo"), targets="roman")
out, held_out = run.output_dir, "bn"
corpus, cache, seen = out / "corpus", out / "romanization.json", [code for code in run.languages if code != held_out]
romanizer, unified = out / "asr" / f"zeroshot-{held_out}-baseline", out / "unified" / f"zeroshot-{held_out}-baseline"
run.stage(f"asr/{romanizer.name}", romanizer / "metrics.json", lambda: run.train(
    "asr", "asr", corpus=corpus, init_encoder=out / "pretrain", output_dir=romanizer, targets="roman",
    romanization_cache=cache, languages=seen))
run.stage(f"unified/{unified.name}", unified / "metrics.json", lambda: run.train(
    "speech_llm", "speech_llm", corpus=corpus, romanizer=romanizer, llm=out / "text_lm", held_out_languages=[held_out],
    romanization_cache=cache, output_dir=unified))
