"""The whole method on one corpus, as a readable list of stages:

    corpus -> vision teacher + image-embedding cache -> stage 1 pretrain -> stage 2 align
           -> stage 3 for the aligned encoder and the baseline (stage 1 -> 3) at each fine-tuning fraction
           -> evaluation (per language, in-domain and out-of-domain, paired bootstrap) -> report.md + results.json

    python -m avalign.training.pipeline --preset demo --output-dir runs/demo

Every stage writes into its own folder under the output directory; a finished stage is skipped when the pipeline
runs again (`--force STAGE` reruns one), and an interrupted training stage resumes from its last checkpoint. Stages
run in this process by default; `--launcher "accelerate launch --num_processes 2"` runs each training stage with it.
"""

import argparse
import json
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets import load_from_disk

from avalign.training import evaluate_asr, synth, teacher, train_align, train_asr, train_pretrain
from avalign.training.report import write_report
from avalign.training.trainer import setup_logging

logger = logging.getLogger("avalign")
CONFIGS = Path(__file__).parent / "configs"
STAGE_SCRIPTS = {"pretrain": train_pretrain, "align": train_align, "asr": train_asr}


@dataclass(frozen=True)
class PipelinePreset:
    corpus: str  # synth preset
    teacher_steps: int
    fractions: tuple[float, ...] = (0.1, 0.25, 1.0)
    eval_splits: tuple[str, ...] = ("test", "test_ood")
    bootstrap_resamples: int = 1000


PRESETS = {
    "smoke": PipelinePreset(corpus="smoke", teacher_steps=20, fractions=(0.25, 1.0), bootstrap_resamples=200),
    "demo": PipelinePreset(corpus="demo", teacher_steps=300),
    "full": PipelinePreset(corpus="full", teacher_steps=2000),
}


class Pipeline:
    """Runs stages in order, skips the finished ones, and records each stage's wall time."""

    def __init__(self, preset: str, output_dir: Path, languages=None, launcher: str | None = None, force=()):
        self.name, self.preset, self.output_dir = preset, PRESETS[preset], output_dir
        self.languages, self.force = languages, set(force)
        self.launcher = shlex.split(launcher) if launcher else None
        self.state_file = output_dir / "pipeline_state.json"
        self.timings = json.loads(self.state_file.read_text())["timings_seconds"] if self.state_file.exists() else {}

    def stage(self, name: str, done_marker: Path, run: Callable[[], None]) -> None:
        if done_marker.exists() and name not in self.force and name.split("/")[0] not in self.force:
            logger.info("[%s] finished earlier: skipped (%s)", name, done_marker)
            return
        logger.info("[%s] starting", name)
        started = time.perf_counter()
        run()
        self.timings[name] = round(time.perf_counter() - started, 1)
        logger.info("[%s] done in %.1f s", name, self.timings[name])
        self.state_file.write_text(json.dumps({"preset": self.name, "timings_seconds": self.timings}, indent=2))

    def train(self, script: str, config: str, **arguments) -> None:
        """A stage script, with the preset's YAML config and these arguments; resumes from its checkpoints."""
        argv = ["--config", str(CONFIGS / f"{config}_{self.name}.yaml"), "--resume", "true"]
        for key, value in arguments.items():
            argv += [f"--{key}", *(map(str, value) if isinstance(value, (list, tuple)) else [str(value)])]
        if self.languages:
            argv += ["--languages", *self.languages]
        if self.launcher:
            subprocess.run([*self.launcher, STAGE_SCRIPTS[script].__file__, *argv], check=True)
        else:
            STAGE_SCRIPTS[script].main(argv)
            _reset_accelerate()


def _reset_accelerate() -> None:
    """Stages share this process: forget the previous stage's Accelerator state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def fraction_dir(system: str, fraction: float) -> str:
    return f"{system}-f{fraction}"


def run_pipeline(preset: str, output_dir: str | Path, languages=None, launcher=None, force=()) -> dict:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(preset, output_dir, languages, launcher, force)
    spec = pipeline.preset
    corpus, teacher_dir, embeddings = output_dir / "corpus", output_dir / "teacher", output_dir / "embeddings"
    pretrain, align = output_dir / "pretrain", output_dir / "align"

    pipeline.stage("corpus", corpus / "stats.json", lambda: synth.write_corpus(
        corpus, preset=spec.corpus, languages=tuple(languages or synth.LANGUAGES)))  # fmt: skip
    pipeline.stage("teacher", embeddings / "counters.json",
                   lambda: stage_teacher(corpus, teacher_dir, embeddings, spec.teacher_steps))  # fmt: skip
    pipeline.stage("pretrain", pretrain / "metrics.json", lambda: pipeline.train(
        "pretrain", "pretrain", corpus=corpus, output_dir=pretrain))  # fmt: skip
    pipeline.stage("align", align / "metrics.json", lambda: pipeline.train(
        "align", "align", corpus=corpus, init_encoder=pretrain, teacher=teacher_dir, embeddings_dir=embeddings,
        output_dir=align))  # fmt: skip
    for fraction in spec.fractions:
        for system, encoder in (("aligned", align), ("baseline", pretrain)):
            folder = output_dir / "asr" / fraction_dir(system, fraction)
            pipeline.stage(f"asr/{fraction_dir(system, fraction)}", folder / "metrics.json", lambda e=encoder, f=folder, x=fraction: pipeline.train(
                "asr", "asr", corpus=corpus, init_encoder=e, train_fraction=x, output_dir=f))  # fmt: skip
    for fraction in spec.fractions:
        folder = output_dir / "eval" / f"f{fraction}"
        pipeline.stage(f"evaluate/f{fraction}", folder / "results.json", lambda f=folder, x=fraction: stage_evaluate(
            output_dir, corpus, f, x, spec))  # fmt: skip
    results = collect_results(pipeline, output_dir)
    write_report(results, output_dir)
    logger.info("report: %s", output_dir / "report.md")
    return results


def stage_teacher(corpus: Path, teacher_dir: Path, embeddings: Path, steps: int) -> None:
    """Stage 0: train the tiny default vision teacher on the corpus images, then embed every unique image once."""
    dataset = load_from_disk(str(corpus))
    metrics = teacher.train_default_teacher(dataset, teacher_dir, steps=steps)
    cache = teacher.embed_images(teacher.VisionTeacher(teacher_dir), dataset, embeddings)
    (embeddings / "counters.json").write_text(json.dumps({**cache.counters(), **metrics}, indent=2))


def stage_evaluate(output_dir: Path, corpus: Path, folder: Path, fraction: float, spec: PipelinePreset) -> None:
    models = {system: output_dir / "asr" / fraction_dir(system, fraction) for system in ("aligned", "baseline")}
    results = evaluate_asr.evaluate_models(models, corpus, folder, splits=spec.eval_splits, fraction=fraction,
                                           num_resamples=spec.bootstrap_resamples)  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))


def collect_results(pipeline: Pipeline, output_dir: Path) -> dict:
    """results.json: everything measured, from each stage's own metrics."""
    read = lambda path: json.loads(path.read_text()) if path.exists() else {}  # noqa: E731
    stats = read(output_dir / "corpus" / "stats.json")
    counters = read(output_dir / "embeddings" / "counters.json")
    align = read(output_dir / "align" / "metrics.json")
    results = {
        "preset": pipeline.name,
        "languages": stats.get("languages", pipeline.languages),
        "fractions": [float(f) for f in pipeline.preset.fractions],
        "timings_seconds": pipeline.timings,
        "corpus": stats,
        "teacher": counters,
        "pretrain": read(output_dir / "pretrain" / "metrics.json").get("eval_metrics", {}),
        "align": {"recall_before": align.get("recall_before"), "recall_after": align.get("recall_after")},
        "asr": {},
        "comparison": {},
    }
    for fraction in pipeline.preset.fractions:
        evaluation = read(output_dir / "eval" / f"f{fraction}" / "results.json")
        for system, by_fraction in evaluation.get("asr", {}).items():
            results["asr"].setdefault(system, {}).update(by_fraction)
        results["comparison"].update(evaluation.get("comparison", {}))
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return results


def main(argv=None) -> dict:
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--languages", nargs="+", help="a subset of the corpus languages")
    parser.add_argument("--launcher", help='e.g. "accelerate launch --num_processes 2" (default: in this process)')
    parser.add_argument("--force", nargs="+", default=[], help="rerun these stages (e.g. align asr evaluate)")
    args = parser.parse_args(argv)
    return run_pipeline(args.preset, args.output_dir, args.languages, args.launcher, args.force)


if __name__ == "__main__":
    main()
