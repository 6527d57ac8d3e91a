"""The whole method on one corpus, as a readable list of stages:

    corpus -> vision teacher + image-embedding cache -> stage 1 pretrain -> stage 2 align
           -> stage 3 for the aligned encoder and the baseline (stage 1 -> 3) at each fine-tuning fraction
           -> evaluation (per language, in-domain and out-of-domain, paired bootstrap) -> report.md + results.json

    python -m avalign.training.pipeline --preset demo --output-dir runs/demo [--targets roman]

`--targets roman` adds, in the same directory, stage 3 on romanized transcripts and the zero-shot protocol, reported
in report-roman.md + results-roman.json (stages 0-2 are shared with the native run): each held-out language is
recognised by a romanizer fine-tuned without it, then written in its native script three ways: two cascades (a
character transliterator; the text-only LM the pipeline trains, prompted) and Zero-AVSR's unified model (the
romanizer's frames straight into that LM, with LoRA).

Every stage writes into its own folder under the output directory; a finished stage is skipped when the pipeline
runs again (`--force STAGE` reruns one), and an interrupted training stage resumes from its last checkpoint. Stages
run in this process by default; `--launcher "accelerate launch --multi_gpu --num_processes 2"` runs each training stage with it.
`--jobs 2` trains stage 3 and the zero-shot stages two at a time, in worker processes of one
thread each that take the next unclaimed stage whose inputs exist: two small models side by side on a core each finish
sooner than one after the other on both cores (the demo's stage-3 step: 0.65 s on one thread, 0.45 s on two). Stages
0-2 and the evaluations run in this process, on every thread.
"""

import argparse
import copy
import fcntl
import json
import logging
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import set_seed
from datasets import load_from_disk

from avalign.modeling import FastConformerModel, load_encoder
from avalign.modeling import SpeechLLMForConditionalGeneration
from avalign.training import evaluate_asr, teacher, text_lm, train_align, train_asr, train_pretrain, train_speech_llm
from avalign.training.corpus import synth
from avalign.training.data.batching import load_image
from avalign.training.data.splits import load_splits
from avalign.training.evaluation.metrics import compare, rate_interval, score
from avalign.training.evaluation.report import (
    COMPARISON_KINDS,
    distinct_table,
    examples_section,
    plot_learning_curves,
    plot_retrieval_examples,
    targets_section,
    write_report,
    zero_shot_decoding,
    zero_shot_table,
)
from avalign.training.logs import setup_logging
from avalign.training.roman import deromanize
from avalign.training.roman.romanize import with_targets
from avalign.training.schema import LANGUAGES
from avalign.training.text_lm import TextLMConfig

logger = logging.getLogger("avalign")
CONFIGS = Path(__file__).parent / "configs"
STAGE_SCRIPTS = {"pretrain": train_pretrain, "align": train_align, "asr": train_asr, "speech_llm": train_speech_llm}


@dataclass(frozen=True)
class PipelinePreset:
    corpus: str  # synth preset
    teacher_steps: int
    languages: tuple[str, ...] = LANGUAGES  # --languages overrides
    fractions: tuple[float, ...] = (0.1, 0.25, 1.0)
    scratch_fractions: tuple[float, ...] = ()  # the scratch control (stage 3 from a random encoder) runs at these
    asr_max_steps: dict[float, int] = field(default_factory=dict)  # stage-3 steps per fraction (else the config's)
    eval_splits: tuple[str, ...] = ("test", "test_ood")
    bootstrap_resamples: int = 1000
    zero_shot_languages: tuple[str, ...] = ()  # with --targets roman: each is held out of fine-tuning in turn
    roman_fractions: tuple[float, ...] | None = None  # with --targets roman: the romanized stage-3 runs (default: all)
    roman_jobs: int | None = None  # with --targets roman: --jobs's default (default: jobs)
    transliterator_steps: int = 600
    text_lm_steps: int = 1500  # the text-only causal LM of the LM cascade and the unified model
    zero_shot_romanizer_steps: int | None = None  # default: the largest-fraction stage 3's steps (held against it)
    text_lm_config: TextLMConfig = field(default_factory=TextLMConfig)
    zero_shot_decoding: str = "tdt"  # how the zero-shot evaluation reads the romanizers and the stage-3 models
    jobs: int = 1  # training stages side by side (--jobs overrides), each worker on one thread


PRESETS = {
    "smoke": PipelinePreset(corpus="smoke", teacher_steps=20, fractions=(0.25, 1.0), scratch_fractions=(0.25,),
                            bootstrap_resamples=200, zero_shot_languages=("hi", "en"), roman_fractions=(1.0,),
                            zero_shot_decoding="ctc", transliterator_steps=60, text_lm_steps=30,
                            text_lm_config=TextLMConfig(hidden_size=32, num_layers=2, num_heads=2,
                                                        intermediate_size=64, vocab_size=1000)),
    # four languages in four scripts: what 2 CPU cores can train to recognise speech in ~30 minutes
    "demo": PipelinePreset(corpus="demo", teacher_steps=2000, languages=("hi", "bn", "ta", "en"),
                           scratch_fractions=(0.1,), asr_max_steps={0.1: 300, 0.25: 400, 1.0: 800},
                           zero_shot_languages=("bn",), roman_fractions=(0.1,),
                           text_lm_steps=5000,  # at 1,500 steps the LM wrote its prior, not its prompt (issue 20)
                           zero_shot_decoding="ctc",  # seen dev, romanized: 7.7 % CTC, 19.8 % TDT (issue 20)
                           roman_jobs=2),  # 2,723 s of roman stages in 1,508 s of wall time (issue 20, tenth pass)
    "full": PipelinePreset(corpus="full", teacher_steps=4000, scratch_fractions=(0.1,),
                           zero_shot_languages=LANGUAGES, transliterator_steps=3000),
}  # fmt: skip
SYSTEMS = ("aligned", "baseline", "scratch")  # stage 3 from the stage-2, the stage-1 and a random encoder
SIDE_BY_SIDE = ("asr", "unified", "text_lm", "deromanizer")  # the stages --jobs workers share out
ALIGN_FIELDS = ("report_split", "recall_before", "recall_after", "retrieval_examples")
ASR_TRAINING_FIELDS = ("train_utterances", "ctc_unfit_utterances", "vocab_size", "global_step", "train_seconds",
                       "freeze_encoder_steps", "ctc_loss_weight", "spec_augment_time_masks", "speed_perturbation",
                       "reverb_probability", "noise_probability")  # fmt: skip


class Pipeline:
    """Runs stages in order, skips the finished ones, and records each stage's wall time. A `worker` (of --jobs) runs
    only the shared stages (SIDE_BY_SIDE, or `shared`) it claims first, once their inputs (`needs`) exist."""

    def __init__(self, preset: str, output_dir: Path, languages=None, launcher: str | None = None, force=(),
                 targets: str = "native", worker: bool = False):
        self.name, self.preset, self.output_dir, self.targets = preset, PRESETS[preset], output_dir, targets
        self.languages, self.force = tuple(languages or self.preset.languages), set(force)
        self.launcher = shlex.split(launcher) if launcher else None
        self.worker, self.claims = worker, output_dir / ".claims"
        self.ran, self.waiting = [], []  # stages this process ran; in a worker's pass, those whose inputs are missing
        self.ran_by_workers = set()  # in the main process: the stages --jobs workers ran (forced or not) this run
        self.state_file = output_dir / "pipeline_state.json"
        self.timings = json.loads(self.state_file.read_text())["timings_seconds"] if self.state_file.exists() else {}

    def stage(self, name: str, done_marker: Path, run: Callable[[], None], needs: tuple[Path, ...] = (),
              shared: bool | None = None) -> None:
        """`shared`: whether --jobs workers run it (default: a SIDE_BY_SIDE stage)."""
        forced = name in self.force or name.split("/")[0] in self.force
        if done_marker.exists() and (not forced or name in self.ran_by_workers):
            if not self.worker:
                logger.info("[%s] finished earlier: skipped (%s)", name, done_marker)
            return
        shared = name.split("/")[0] in SIDE_BY_SIDE if shared is None else shared
        if self.worker and not (shared and self.claim(name, needs)):
            return
        logger.info("[%s] starting", name)
        started = time.perf_counter()
        run()
        seconds = round(time.perf_counter() - started, 1)
        logger.info("[%s] done in %.1f s", name, seconds)
        self.ran.append(name)
        self.record({name: seconds})

    def claim(self, name: str, needs: tuple[Path, ...]) -> bool:
        """In a worker: whether this shared stage is ours to run now (inputs ready, no other worker's)."""
        if not all(marker.exists() for marker in needs):
            self.waiting.append(name)
            return False
        self.claims.mkdir(exist_ok=True)
        try:
            claim = os.open(self.claims / name.replace("/", "__"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(claim, str(os.getpid()).encode())  # which worker ran it
        os.close(claim)
        return True

    def record(self, entries: dict, key: str = "timings_seconds") -> None:
        """Merge `entries` into pipeline_state.json under `key`, locked: other processes (--jobs workers, the study)
        may share this directory."""
        with open(self.output_dir / ".pipeline_state.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
            state = {"preset": self.name, "timings_seconds": {}, **state}
            state[key] = {**state.get(key, {}), **entries}
            partial = self.state_file.with_suffix(".partial")
            partial.write_text(json.dumps(state, indent=2))
            partial.replace(self.state_file)
        self.timings = state["timings_seconds"]

    def train(self, script: str, config: str, **arguments) -> None:
        """A stage script, with the preset's YAML config and these arguments; resumes from its checkpoints."""
        argv = ["--config", str(CONFIGS / f"{config}_{self.name}.yaml"), "--resume", "true"]
        for key, value in arguments.items():
            argv += [f"--{key}", *(map(str, value) if isinstance(value, (list, tuple)) else [str(value)])]
        if "languages" not in arguments:
            argv += ["--languages", *self.languages]
        if self.worker:  # two progress bars would overwrite each other: the log's step lines remain
            argv += ["--progress", "false"]
        if self.launcher:
            subprocess.run([*self.launcher, STAGE_SCRIPTS[script].__file__, *argv], check=True)
        else:
            STAGE_SCRIPTS[script].main(argv)  # each stage's trainer starts from a fresh accelerate state


def run_side_by_side(pipeline: Pipeline, jobs: int) -> None:
    """`jobs` worker processes of one thread each (`--worker`) that share out the SIDE_BY_SIDE stages; a failed
    worker stops the others and raises."""
    shutil.rmtree(pipeline.claims, ignore_errors=True)  # no worker is alive: every claim left is stale
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "avalign.training.pipeline", "--worker", "--preset", pipeline.name,
               "--output-dir", str(pipeline.output_dir), "--targets", pipeline.targets,
               "--languages", *pipeline.languages]  # fmt: skip
    command += ["--force", *pipeline.force] if pipeline.force else []
    command += ["--launcher", shlex.join(pipeline.launcher)] if pipeline.launcher else []
    workers = [subprocess.Popen(command, env=environment) for _ in range(jobs)]
    while any(worker.poll() is None for worker in workers):
        if any(worker.returncode for worker in workers):
            for worker in workers:
                worker.terminate()
            break
        time.sleep(1.0)
    failed = [worker.returncode for worker in workers if worker.wait()]
    if failed:
        raise RuntimeError(f"{len(failed)} of {jobs} pipeline workers failed (exit {failed}); see the log above. "
                           "Rerun: finished stages are skipped and interrupted ones resume")  # fmt: skip


def run_as_worker(pipeline: Pipeline) -> None:
    """A --jobs worker: passes over the stage list, running the stages it claims, until none is left to it."""
    while True:
        ran, pipeline.waiting = len(pipeline.ran), []
        run_stages(pipeline)
        if not pipeline.waiting:
            return
        if len(pipeline.ran) == ran:  # only stages whose inputs another worker is still training
            time.sleep(2.0)


def run_fractions(spec: PipelinePreset, targets: str) -> tuple[float, ...]:
    """The fine-tuning fractions stage 3 runs at: the preset's, or for roman targets its `roman_fractions`."""
    return spec.fractions if targets == "native" or spec.roman_fractions is None else spec.roman_fractions


def default_jobs(spec: PipelinePreset, targets: str) -> int:
    """How many training stages run side by side without --jobs: the preset's, or for roman targets its `roman_jobs`."""
    return spec.roman_jobs if targets == "roman" and spec.roman_jobs is not None else spec.jobs


def fraction_dir(system: str, fraction: float, targets: str = "native") -> str:
    """Folder name of a stage-3 run (`system` aligned/baseline) or, with system "", of its evaluation."""
    name = f"{system}-f{fraction}" if system else f"f{fraction}"
    return name if targets == "native" else f"{targets}-{name}"


def run_pipeline(preset: str, output_dir: str | Path, languages=None, launcher=None, force=(), targets="native",
                 jobs: int | None = None) -> dict:
    """Every stage, then results.json and report.md. With `jobs` > 1 (default: the preset's) stages 0-2 run first,
    then the SIDE_BY_SIDE stages in `jobs` worker processes, then the rest here."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(preset, output_dir, languages, launcher, force, targets)
    jobs = default_jobs(pipeline.preset, targets) if jobs is None else jobs
    started, timings_before = time.perf_counter(), dict(pipeline.timings)
    if jobs > 1:
        run_encoders(pipeline)
        run_side_by_side(pipeline, jobs)
        pipeline.ran_by_workers = {claim.name.replace("__", "/") for claim in pipeline.claims.glob("*")}
        pipeline.timings = json.loads(pipeline.state_file.read_text())["timings_seconds"]
    corpus, cache = run_stages(pipeline)
    if pipeline.timings != timings_before:  # a run that trained or evaluated anything: its wall time, stages overlapping
        pipeline.record({targets: {"seconds": round(time.perf_counter() - started, 1), "jobs": jobs}}, key="runs")
    results = collect_results(pipeline, output_dir)
    suffix = results_suffix(targets)
    (output_dir / "plots").mkdir(exist_ok=True)
    plot_learning_curves(results["learning_curves"], output_dir / "plots" / f"learning_curves{suffix}.png")
    align = results["align"]
    if align["retrieval_examples"]:
        plot_retrieval_examples(align["retrieval_examples"], corpus_images(corpus, align["report_split"]),
                                output_dir / "plots" / "retrieval_examples.png")  # fmt: skip
    paths = write_report(results, output_dir, preamble=run_summary(results, suffix),
                         postscript="\n".join(examples_section(results)), suffix=suffix)  # fmt: skip
    logger.info("report: %s", paths[0])
    return results


def run_encoders(pipeline: Pipeline) -> tuple[Path, dict, Path]:
    """Stages 0-2 (and the scratch control's random encoder) -> (corpus, {system: encoder folder}, the romanization
    cache every roman stage shares)."""
    output_dir, spec = pipeline.output_dir, pipeline.preset
    corpus, teacher_dir, embeddings, pretrain = run_stages_0_1(pipeline)
    align, scratch = output_dir / "align", output_dir / "scratch"
    pipeline.stage("align", align / "metrics.json", lambda: pipeline.train(
        "align", "align", corpus=corpus, init_encoder=pretrain, teacher=teacher_dir, embeddings_dir=embeddings,
        output_dir=align))  # fmt: skip
    if spec.scratch_fractions:
        pipeline.stage("scratch", scratch / "config.json", lambda: stage_scratch(pretrain, scratch))
    encoders = {"aligned": align, "baseline": pretrain, "scratch": scratch}
    return corpus, encoders, output_dir / "romanization.json"  # uroman output of every transcript


def run_stages(pipeline: Pipeline) -> tuple[Path, Path]:
    """The stage list: stages 0-2, for roman targets the text LM and the zero-shot training stages, stage 3 at each
    fraction, for roman targets the de-romanizer, then the evaluations -> (corpus, romanization cache)."""
    output_dir, spec, targets = pipeline.output_dir, pipeline.preset, pipeline.targets
    corpus, encoders, cache = run_encoders(pipeline)
    if targets == "roman":  # the longest chains first, for --jobs: the text LM, and each romanizer then its unified
        run_text_lm(pipeline, corpus, cache)  # model (which waits for both); stage 3 fills in around them
        run_zero_shot(pipeline, corpus, {system: encoders[system] for system in ("aligned", "baseline")}, cache)
    for fraction in run_fractions(spec, targets):
        for system in systems_at(spec, fraction, targets):
            encoder, name = encoders[system], fraction_dir(system, fraction, targets)
            train = lambda e=encoder, n=name, x=fraction, s=system: pipeline.train(  # noqa: E731
                "asr", "asr", corpus=corpus, init_encoder=e, train_fraction=x, output_dir=output_dir / "asr" / n,
                targets=targets, romanization_cache=cache, **asr_overrides(spec, x, s))  # fmt: skip
            pipeline.stage(f"asr/{name}", output_dir / "asr" / name / "metrics.json", train)
    if targets == "roman":  # de-romanizer (~20 s, read by the evaluations alone) last: off the chains above
        run_deromanizer(pipeline, corpus, cache)
    for fraction in run_fractions(spec, targets):  # a --jobs worker evaluates a fraction once its models exist
        folder = output_dir / "eval" / fraction_dir("", fraction, targets)
        models = [output_dir / "asr" / fraction_dir(system, fraction, targets) / "metrics.json"
                  for system in systems_at(spec, fraction, targets)]  # fmt: skip
        pipeline.stage(f"evaluate/{folder.name}", folder / "results.json", lambda f=folder, x=fraction: stage_evaluate(
            output_dir, corpus, f, x, spec, targets, cache), needs=tuple(models), shared=True)  # fmt: skip
    if targets == "roman":
        run_zero_shot_evaluation(pipeline, corpus, cache)
    return corpus, cache


def run_stages_0_1(pipeline: Pipeline) -> tuple[Path, Path, Path, Path]:
    """The corpus, the vision teacher with its embedding cache, and stage 1, each skipped when finished (the study
    reuses them). -> (corpus, teacher, embeddings, pretrain) folders."""
    output_dir, spec = pipeline.output_dir, pipeline.preset
    corpus, teacher_dir, embeddings = output_dir / "corpus", output_dir / "teacher", output_dir / "embeddings"
    pretrain = output_dir / "pretrain"
    pipeline.stage("corpus", corpus / "stats.json", lambda: synth.write_corpus(
        corpus, preset=spec.corpus, languages=pipeline.languages))  # fmt: skip
    pipeline.stage("teacher", embeddings / "counters.json",
                   lambda: stage_teacher(corpus, teacher_dir, embeddings, spec.teacher_steps))  # fmt: skip
    pipeline.stage("pretrain", pretrain / "metrics.json", lambda: pipeline.train(
        "pretrain", "pretrain", corpus=corpus, output_dir=pretrain))  # fmt: skip
    return corpus, teacher_dir, embeddings, pretrain


def corpus_images(corpus: Path, split: str) -> dict:
    """{image_id: PIL image} of one split's images (for the retrieval examples)."""
    dataset = load_splits(str(corpus), [split]).select_columns(["image_id", "image"])
    return {row["image_id"]: load_image(row["image"], row["image_id"]) for row in dataset if row["image_id"]}


def results_suffix(targets: str) -> str:
    """results.json / report.md for native targets; results-roman.json / report-roman.md next to them for roman."""
    return "" if targets == "native" else f"-{targets}"


def stage_teacher(corpus: Path, teacher_dir: Path, embeddings: Path, steps: int) -> None:
    """Stage 0: train the tiny default vision teacher on the corpus images, then embed every unique image once."""
    dataset = load_from_disk(str(corpus))
    metrics = teacher.train_default_teacher(dataset, teacher_dir, steps=steps)
    cache = teacher.embed_images(teacher.VisionTeacher(teacher_dir), dataset, embeddings)
    (embeddings / "counters.json").write_text(json.dumps({**cache.counters(), **metrics}, indent=2))


def asr_overrides(spec: PipelinePreset, fraction: float, system: str) -> dict:
    """Stage-3 settings that differ from the config file: the preset's steps for this fraction, and no head warm-up
    for the scratch control (freezing a random encoder would only handicap it)."""
    overrides = {"max_steps": spec.asr_max_steps[fraction]} if fraction in spec.asr_max_steps else {}
    return overrides | ({"freeze_encoder_steps": 0} if system == "scratch" else {})


def zero_shot_romanizer_overrides(spec: PipelinePreset, system: str) -> dict:
    """A zero-shot romanizer's stage-3 settings: the largest fraction's (it trains on all of its languages' data) but
    for the preset's `zero_shot_romanizer_steps`. One read with CTC (the zero-shot evaluation's `zero_shot_decoding`;
    the unified model's slot is its CTC transcript) trains its CTC head alone: the transducer costs a quarter of a
    hybrid step, for a head nothing reads. Its dev curve has four points: each evaluation delays the chain of stages
    that bounds a --jobs run (romanizer, romanizer, unified model), and none changes the model."""
    overrides = asr_overrides(spec, max(spec.fractions), system)
    if spec.zero_shot_romanizer_steps is not None:
        overrides["max_steps"] = spec.zero_shot_romanizer_steps
    if "max_steps" in overrides:
        overrides["eval_steps"] = max(1, overrides["max_steps"] // 4)
    return overrides | ({"ctc_loss_weight": 1.0} if spec.zero_shot_decoding == "ctc" else {})


def systems_at(spec: PipelinePreset, fraction: float, targets: str = "native") -> tuple[str, ...]:
    """The stage-3 systems trained at `fraction`: aligned and baseline, and the scratch control where the preset
    runs it. The scratch control asks what stage 1 is worth, which the native run answers; a roman run does not ask
    it again (on the demo: ~150 s of stage time for a figure the native report has, issue 20)."""
    return SYSTEMS if targets == "native" and fraction in spec.scratch_fractions else SYSTEMS[:2]


def stage_scratch(pretrain: Path, scratch: Path, seed: int = 0) -> None:
    """The scratch control's encoder: stage 1's architecture with random weights (and no training)."""
    set_seed(seed)
    FastConformerModel(load_encoder(pretrain)[0].config).save_pretrained(scratch)


def stage_evaluate(output_dir: Path, corpus: Path, folder: Path, fraction: float, spec: PipelinePreset,
                   targets: str = "native", cache: Path | None = None) -> None:
    systems = systems_at(spec, fraction, targets)
    models = {system: output_dir / "asr" / fraction_dir(system, fraction, targets) for system in systems}
    comparisons = {"comparison": ("aligned", "baseline")}  # does alignment help?
    if "scratch" in systems:
        comparisons["scratch_comparison"] = ("baseline", "scratch")  # does stage 1 help?
    results = evaluate_asr.evaluate_models(models, corpus, folder, splits=spec.eval_splits, fraction=fraction,
                                           num_resamples=spec.bootstrap_resamples, romanization_cache=cache,
                                           comparisons=comparisons)  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))


def run_deromanizer(pipeline: Pipeline, corpus: Path, cache: Path) -> None:
    """The character transliterator of the char cascade, trained on text alone."""
    output_dir, spec = pipeline.output_dir, pipeline.preset
    pipeline.stage("deromanizer", output_dir / "deromanizer" / "metrics.json", lambda: deromanize.train_transliterator(
        deromanize.corpus_pairs(load_from_disk(str(corpus)), cache), output_dir / "deromanizer",
        steps=spec.transliterator_steps))  # fmt: skip


def run_text_lm(pipeline: Pipeline, corpus: Path, cache: Path) -> None:
    """The text-only causal LM: the LM cascade's de-romanizer and the unified model's LLM."""
    output_dir, spec = pipeline.output_dir, pipeline.preset
    pipeline.stage("text_lm", output_dir / "text_lm" / "metrics.json", lambda: text_lm.train_text_lm(
        text_lm_texts(corpus, cache, pipeline.languages), output_dir / "text_lm", steps=spec.text_lm_steps,
        config=spec.text_lm_config))  # fmt: skip


def held_out_languages(pipeline: Pipeline) -> list[str]:
    return [language for language in pipeline.preset.zero_shot_languages if language in pipeline.languages]


def zero_shot_systems(output_dir: Path, held_out: str, spec: PipelinePreset, systems=("aligned", "baseline")):
    """The folders behind one held-out language's zero-shot evaluation."""
    largest = max(spec.fractions)  # the native-target stage-3 models the unified one is held against on seen languages
    return ZeroShotSystems(romanizers={system: output_dir / "asr" / f"zeroshot-{held_out}-{system}" for system in systems},
                           unified={system: output_dir / "unified" / f"zeroshot-{held_out}-{system}" for system in systems},
                           natives={system: output_dir / "asr" / fraction_dir(system, largest) for system in systems},
                           transliterator=output_dir / "deromanizer", text_lm=output_dir / "text_lm")  # fmt: skip


def run_zero_shot(pipeline: Pipeline, corpus: Path, encoders: dict, cache: Path) -> None:
    """Language-agnostic ASR: for each held-out language, fine-tune (roman targets) on every other language, then
    train the unified model (the text-only LM, fed that romanizer's frames)."""
    lm_dir = pipeline.output_dir / "text_lm"
    for held_out in held_out_languages(pipeline):
        seen = [language for language in pipeline.languages if language != held_out]
        systems = zero_shot_systems(pipeline.output_dir, held_out, pipeline.preset, tuple(encoders))
        for system, encoder in encoders.items():
            romanizer, unified = systems.romanizers[system], systems.unified[system]
            pipeline.stage(f"asr/zeroshot-{held_out}-{system}", romanizer / "metrics.json", lambda e=encoder, f=romanizer, k=seen, s=system: pipeline.train(
                "asr", "asr", corpus=corpus, init_encoder=e, output_dir=f, targets="roman", romanization_cache=cache,
                languages=k, **zero_shot_romanizer_overrides(pipeline.preset, s)))  # fmt: skip
            pipeline.stage(f"unified/zeroshot-{held_out}-{system}", unified / "metrics.json", lambda r=romanizer, f=unified, h=held_out: pipeline.train(
                "speech_llm", "speech_llm", corpus=corpus, romanizer=r, llm=lm_dir, held_out_languages=[h],
                romanization_cache=cache, output_dir=f), needs=(romanizer / "metrics.json", lm_dir / "metrics.json"))  # fmt: skip


def run_zero_shot_evaluation(pipeline: Pipeline, corpus: Path, cache: Path) -> None:
    """Each held-out language recognised by its romanizer, then written in its native script three ways: two
    cascades (the transliterator; the text-only LM, prompted) and the unified model."""
    for held_out in held_out_languages(pipeline):
        folder = pipeline.output_dir / "eval" / f"zeroshot-{held_out}"
        systems = zero_shot_systems(pipeline.output_dir, held_out, pipeline.preset)
        pipeline.stage(f"evaluate/zeroshot-{held_out}", folder / "results.json", lambda f=folder, s=systems, h=held_out: evaluate_zero_shot(
            s, corpus, h, cache, f, pipeline.preset.bootstrap_resamples, pipeline.preset.zero_shot_decoding))  # fmt: skip


def text_lm_texts(corpus: Path, cache: Path, languages, drills: bool = True, latin: bool = True) -> list[str]:
    """What the text-only LM reads: every language's native-script sentences from the training-side splits (the
    held-out languages included: an LLM has read text in languages it has never heard), and the same sentences in
    the LM cascade's prompt form ("Roman: ... <Language>: native"), so that the LM cascade is a fair one. With
    `drills`, also as many `deromanize.reading_drills` in that form: random words of those sentences, which only
    reading can write (trained on templated sentences alone, a small LM writes the template's likeliest words).
    With `latin`, Latin-script languages (their own romanization) in that form too, as copies: an LLM that has
    never copied an English prompt writes its prior's words into the unified model's English output."""
    pairs = [pair for pair in deromanize.corpus_pairs(load_from_disk(str(corpus)), cache) if pair[0] in languages]
    sentences, _ = deromanize.unique_sentences(pairs, keep_latin=latin)
    examples = sentences + (deromanize.reading_drills(sentences) if drills else [])
    prompts = [f"{deromanize.deromanization_prompt(roman, language)} {native}" for language, roman, native in examples]
    return [native for _, _, native in pairs] + prompts


@dataclass(frozen=True)
class ZeroShotSystems:
    """The folders behind one held-out language's evaluation: {encoder system: folder} of the romanizers, the
    unified models and the native-target stage-3 models, and the two cascades' de-romanizers."""

    romanizers: dict
    unified: dict
    natives: dict
    transliterator: Path
    text_lm: Path


NATIVE_SYSTEMS = ("cascade_char", "cascade_lm", "unified")  # the ways to the native script, in the report's order
FREE_SYSTEMS = ("cascade_lm_free", "unified_free")  # the LM's two, decoded free (the others are held to the script)
NO_SPEECH = "no_speech"  # the control: a random training-side sentence of the language, for each utterance


def evaluate_zero_shot(systems: ZeroShotSystems, corpus: Path, language: str, cache: Path, folder: Path,
                       num_resamples: int, decoding: str = "tdt") -> None:  # fmt: skip
    """On the held-out language's test set: romanized CER/WER of each encoder's romanizer; native-script CER/WER
    through each cascade and the unified model, each with its bootstrap interval; aligned vs baseline and unified vs
    each cascade and vs the no-speech control (paired bootstrap). The LM's outputs (LM cascade, unified model) are
    held to the language's script (`ScriptConstraint`: the language is given) and reported decoded free as well. On
    the seen languages' test set: the unified model against the native-target stage-3 model. The romanizers and the
    stage-3 models are read with `decoding` ("tdt" or "ctc")."""
    folder.mkdir(parents=True, exist_ok=True)
    test = load_splits(str(corpus), ["test"])
    native_test = test.filter(lambda code: code == language, input_columns="language")
    roman_test = with_targets(native_test, "roman", cache)
    seen_test = test.filter(lambda code: code != language, input_columns="language")
    held = deromanize.load_deromanizer(f"lm:{systems.text_lm}", constrain_to_script=True)
    free = copy.copy(held)  # the same LM, loaded once
    free.constrain_to_script = False
    cascades = {"cascade_char": deromanize.load_deromanizer(f"char:{systems.transliterator}"), "cascade_lm": held,
                "cascade_lm_free": free}  # fmt: skip
    natives = dict(zip(roman_test["utterance_id"], roman_test["transcript_native"]))
    no_speech = no_speech_records(native_test, corpus, cache, language)
    records = {view: {} for view in ("roman", *NATIVE_SYSTEMS, *FREE_SYSTEMS, NO_SPEECH)}
    seen = {}
    for system, model_dir in systems.romanizers.items():
        model, feature_extractor, tokenizer = evaluate_asr.load_asr_model(model_dir)
        roman = evaluate_asr.transcribe_dataset(model, feature_extractor, tokenizer, roman_test, decoding)
        records["roman"][system], records[NO_SPEECH][system] = roman, no_speech
        for name, deromanizer in cascades.items():
            hypotheses = deromanizer.deromanize([r["hypothesis"] for r in roman], [language] * len(roman))
            records[name][system] = [{**r, "reference": natives[r["utterance_id"]], "hypothesis": h}
                                     for r, h in zip(roman, hypotheses)]  # fmt: skip
        unified = SpeechLLMForConditionalGeneration.from_pretrained(systems.unified[system])
        records["unified"][system] = train_speech_llm.transcribe(unified, native_test, constrain_to_script=True)
        records["unified_free"][system] = train_speech_llm.transcribe(unified, native_test, constrain_to_script=False)
        seen[system] = seen_languages(unified, systems.natives[system], seen_test, num_resamples, decoding)
    results = {"language": language, "decoding": decoding, "seen_languages_only": True,
               "examples": output_examples(records), "seen": seen}  # fmt: skip
    for view, by_system in records.items():
        results[view] = {system: {**score(rs)["overall"], **rate_interval(rs, "cer", num_resamples)}
                         for system, rs in by_system.items()}  # fmt: skip
        results[f"{view}_comparison"] = compare(by_system, "cer", num_resamples)["overall"]
        evaluate_asr.write_jsonl([r for rs in by_system.values() for r in rs], folder / f"predictions-{view}.jsonl")
    results["unified_vs_cascade"] = {
        system: {other: compare({"unified": records["unified"][system], other: records[other][system]}, "cer",
                                num_resamples)["overall"] for other in ("cascade_char", "cascade_lm", NO_SPEECH)}
        for system in systems.romanizers
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))


def no_speech_records(dataset, corpus: Path, cache: Path, language: str, seed: int = 0) -> list[dict]:
    """The control that hears nothing: for each utterance of `dataset`, a random sentence of `language` from the
    training-side splits (what a fluent prior alone scores on templated sentences)."""
    pairs = deromanize.corpus_pairs(load_from_disk(str(corpus)), cache)
    pool = sorted({native for code, _, native in pairs if code == language})
    draw = random.Random(seed)
    return [{"utterance_id": u, "language": language, "reference": reference, "hypothesis": draw.choice(pool)}
            for u, reference in zip(dataset["utterance_id"], dataset["transcript"])]  # fmt: skip


def seen_languages(unified, native_model_dir: Path, dataset, num_resamples: int, decoding: str = "tdt") -> dict:
    """The unified model against the native-target stage-3 model (read with `decoding`) on the seen languages' test
    utterances: each CER with its interval, and the paired difference unified - stage 3. {} when the native run is
    missing."""
    if not (native_model_dir / "config.json").exists():
        logger.warning("no native-target stage-3 model at %s (run the native pipeline first): the unified model is "
                       "not compared on the seen languages", native_model_dir)  # fmt: skip
        return {}
    model, feature_extractor, tokenizer = evaluate_asr.load_asr_model(native_model_dir)
    records = {"unified": train_speech_llm.transcribe(unified, dataset, constrain_to_script=True),
               "native_stage3": evaluate_asr.transcribe_dataset(model, feature_extractor, tokenizer, dataset, decoding)}
    return {**{name: {**score(rs)["overall"], **rate_interval(rs, "cer", num_resamples)} for name, rs in records.items()},
            "comparison": compare(records, "cer", num_resamples)["overall"],
            "languages": sorted(set(dataset["language"]))}  # fmt: skip


def output_examples(records: dict, count: int = 2) -> list[dict]:
    """The first `count` test utterances as each system wrote them, romanized and in native script (each way to
    it), with the references. records: {"roman" | "cascade_char" | "cascade_lm" | "unified": {system: [record]}}."""
    utterance_ids = [record["utterance_id"] for record in next(iter(records["roman"].values()))[:count]]
    examples = []
    for utterance_id in utterance_ids:
        example = {"utterance_id": utterance_id}
        for script, by_system in records.items():
            for system, system_records in by_system.items():
                record = next(r for r in system_records if r["utterance_id"] == utterance_id)
                example |= {f"reference_{script}": record["reference"], f"{system}_{script}": record["hypothesis"]}
        examples.append(example)
    return examples


def collect_results(pipeline: Pipeline, output_dir: Path) -> dict:
    """results.json (results-roman.json for roman targets): everything measured, from each stage's own metrics."""
    read = lambda path: json.loads(path.read_text()) if path.exists() else {}  # noqa: E731
    stats = read(output_dir / "corpus" / "stats.json")
    counters = read(output_dir / "embeddings" / "counters.json")
    align = read(output_dir / "align" / "metrics.json")
    results = {
        "preset": pipeline.name,
        "languages": stats.get("languages", pipeline.languages),
        "fractions": [float(f) for f in run_fractions(pipeline.preset, pipeline.targets)],
        "timings_seconds": stage_timings(pipeline.timings, pipeline.targets),
        "run": read(pipeline.state_file).get("runs", {}).get(pipeline.targets),  # the last run that ran a stage
        "corpus": stats,
        "teacher": counters,
        "pretrain": read(output_dir / "pretrain" / "metrics.json").get("eval_metrics", {}),
        "precision": {stage: stage_precision(read(output_dir / stage / "metrics.json"))
                      for stage in ("pretrain", "align")},
        "align": {key: align.get(key) for key in ALIGN_FIELDS},
        "asr_training": {},
        "learning_curves": {stage: read(output_dir / stage / "metrics.json").get("eval_history", [])
                            for stage in ("pretrain", "align")},
        "asr": {},
        "examples": {},
        **{kind: {} for kind in COMPARISON_KINDS},
    }  # fmt: skip
    spec, targets = pipeline.preset, pipeline.targets
    runs = [(system, f) for f in run_fractions(spec, targets) for system in systems_at(spec, f, targets)]
    for name in (fraction_dir(system, f, targets) for system, f in runs):
        metrics = read(output_dir / "asr" / name / "metrics.json")
        results["learning_curves"][f"asr/{name}"] = metrics.get("eval_history", [])
        settings = metrics.get("hyperparameters", {})
        results["asr_training"][name] = {key: metrics.get(key, settings.get(key)) for key in ASR_TRAINING_FIELDS}
        results["precision"][f"asr/{name}"] = stage_precision(metrics)
    for fraction in run_fractions(spec, targets):
        evaluation = read(output_dir / "eval" / fraction_dir("", fraction, targets) / "results.json")
        for system, by_fraction in evaluation.get("asr", {}).items():
            results["asr"].setdefault(system, {}).update(by_fraction)
        for kind in ("examples", *COMPARISON_KINDS):
            results[kind].update(evaluation.get(kind, {}))
    results["targets"] = pipeline.targets
    zero_shot = {folder.name.removeprefix("zeroshot-"): read(folder / "results.json")
                 for folder in sorted((output_dir / "eval").glob("zeroshot-*"))}  # fmt: skip
    if zero_shot:
        results["zero_shot"] = {language: entry for language, entry in zero_shot.items() if entry}
        results["deromanizer"] = read(output_dir / "deromanizer" / "metrics.json")
        results["text_lm"] = read(output_dir / "text_lm" / "metrics.json")
        results["unified_training"] = {folder.name: {key: read(folder / "metrics.json").get(key) for key in
                                                     ("global_step", "train_seconds", "trainable_parameters",
                                                      "speech_languages", "text_sentences")}
                                       for folder in sorted((output_dir / "unified").glob("zeroshot-*"))}  # fmt: skip
    results_file = output_dir / f"results{results_suffix(pipeline.targets)}.json"
    results_file.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return results


def stage_precision(metrics: dict) -> dict:
    """The precision a training stage ran in, why, and on which CPU (its metrics.json's precision_* entries)."""
    settings = metrics.get("hyperparameters", {})
    return {key.removeprefix("precision_"): value for key, value in settings.items() if key.startswith("precision_")}


def machine_lines(precision: dict) -> list[str]:
    """The report's machine line: CPU model, capability and each precision used, so that two reports compare
    honestly (the same CPU can run 70x apart in bf16 and fp32)."""
    known = {stage: entry for stage, entry in precision.items() if entry}
    if not known:
        return []
    first = next(iter(known.values()))
    used = {}
    for stage, entry in known.items():
        used.setdefault(f"{entry['precision']} ({entry['requested']})", []).append(stage)
    precisions = "; ".join(f"{name}: {', '.join(stages)}" for name, stages in used.items())
    return [f"Machine: {first['cpu_model']}, CPU capability {first['cpu_capability']}. Precision: {precisions} "
            f"({first['reason']}).", ""]


def stage_timings(timings: dict, targets: str) -> dict:
    """The wall times of the stages behind one report: the shared stages 0-2 and this target mode's stage 3 and
    evaluation (a native and a roman run share one run directory and its pipeline_state.json)."""

    def report_of(stage: str) -> str:  # "both", "native" or "roman"
        if "roman-" in stage or "zeroshot-" in stage or stage in ("deromanizer", "text_lm"):
            return "roman"
        return "native" if stage.startswith(("asr/", "evaluate/")) else "both"

    return {stage: seconds for stage, seconds in timings.items() if report_of(stage) in ("both", targets)}


def run_summary(results: dict, suffix: str = "") -> str:
    """The report's first part: the targets, the corpus, stage 0-2 metrics and learning curves, stage-3 training and
    each stage's wall time."""
    lines = [f"# avalign pipeline · preset `{results['preset']}`", "",
             f"Languages: {', '.join(results['languages'] or [])}. Fine-tuning fractions: {results['fractions']}.", "",
             *machine_lines(results.get("precision", {})), *targets_section(results),
             "## Corpus", "", "| split | utterances | hours | images |", "|---|---:|---:|---:|"]  # fmt: skip
    for split, by_language in results["corpus"].get("splits", {}).items():
        total = by_language["all"]
        lines.append(f"| {split} | {total['utterances']} | {total['hours']:.2f} | {total['images']} |")
    teacher_metrics, align = results["teacher"], results["align"]
    lines += ["", "## Stages 0-2", "",
              f"- vision teacher: {teacher_metrics.get('teacher_calls')} teacher calls for "
              f"{teacher_metrics.get('unique_images')} unique images ({teacher_metrics.get('requested_rows')} rows); "
              f"image->caption recall@1 {percent(teacher_metrics.get('caption_recall_at_1'))} "
              f"(chance {percent(teacher_metrics.get('chance_recall_at_1'))})",
              f"- stage 1 held-out masked-token accuracy: {percent(results['pretrain'].get('masked_accuracy'))}",
              f"- stage 2 audio->image retrieval on held-out images ({align['report_split']}): before "
              f"{retrieval(align['recall_before'])}; after {retrieval(align['recall_after'])}", "",
              f"![dev learning curves](plots/learning_curves{suffix}.png)", ""]  # fmt: skip
    if align["retrieval_examples"]:
        lines += ["Audio → image retrieval after alignment: held-out clips, their prompt image and the images the "
                  "audio embedding ranks first (green: the prompt image):", "",
                  "![retrieval examples](plots/retrieval_examples.png)", ""]  # fmt: skip
    columns = {"utterances": "train_utterances", "vocabulary": "vocab_size", "CTC cannot fit": "ctc_unfit_utterances",
               "steps": "global_step", "head warm-up": "freeze_encoder_steps", "SpecAugment time masks":
               "spec_augment_time_masks", "speed ±": "speed_perturbation", "reverb p": "reverb_probability",
               "noise p": "noise_probability"}  # fmt: skip
    lines += ["## Stage 3 training", "", "| run | " + " | ".join(columns) + " | seconds |",
              "|---|" + "---:|" * (len(columns) + 1)]  # fmt: skip
    for name, run in results["asr_training"].items():
        lines.append(f"| {name} | " + " | ".join(str(run[key]) for key in columns.values())
                     + f" | {run['train_seconds'] or 0:.0f} |")  # fmt: skip
    if any(t.get("reverb_probability") or t.get("noise_probability") for t in results["asr_training"].values()):
        lines += ["", "Stage 3 adds reverberation and white noise to its training audio: the kinds of degradation "
                  "`test_ood` is made of (drawn independently), so `test_ood` measures unseen voices and sentence "
                  "templates under degradations of a familiar kind (docs/experiments.md, finding 10)."]  # fmt: skip
    lines += ["", "Distinct hypotheses / distinct references on the test sets (1 / N: the same text for every clip):",
              "", *distinct_table(results), "", "## Wall time per stage", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {stage} | {seconds} |" for stage, seconds in results["timings_seconds"].items()]
    lines.append(f"| **total** | {sum(results['timings_seconds'].values()):.1f} |")
    if results.get("run"):
        run = results["run"]
        lines += ["", f"The last run of this report's stages took {run['seconds']:.0f} s of wall time, with "
                      f"{run['jobs']} training stage(s) at a time (`--jobs`; per-stage times overlap when above 1)."]
    if results.get("zero_shot"):
        lines += ["", f"## Zero-shot languages (roman targets, test set, {zero_shot_decoding(results['zero_shot'])})", "",
                  *zero_shot_table(results["zero_shot"])]
    return "\n".join(lines) + "\n\n"


def percent(fraction: float | None) -> str:
    return "not measured" if fraction is None else f"{100 * fraction:.2f} %"


def retrieval(metrics: dict | None) -> str:
    """recall@k in % among N images, and the audio embeddings' spread next to the images' (near 0: collapsed)."""
    if not metrics:
        return "not measured"
    recalls = ", ".join(f"{key} {percent(value)}" for key, value in metrics.items() if key.startswith("recall@"))
    images = metrics.get("num_images") or 0
    text = f"{recalls} among {images} images (chance recall@1 {percent(1 / max(images, 1))})"
    if "audio_spread" in metrics:
        text += f", embedding spread audio {metrics['audio_spread']:.3f} / images {metrics['image_spread']:.3f}"
    return text


def main(argv=None) -> dict:
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--languages", nargs="+", help="a subset of the corpus languages")
    parser.add_argument("--launcher", help='e.g. "accelerate launch --multi_gpu --num_processes 2" (default: in this process)')
    parser.add_argument("--force", nargs="+", default=[], help="rerun these stages (e.g. align asr evaluate)")
    parser.add_argument("--targets", choices=["native", "roman"], default="native",
                        help="roman: uroman targets for stage 3, plus the zero-shot protocol on held-out languages")
    parser.add_argument("--jobs", type=int, help="training stages side by side, one thread each (default: the "
                        "preset's: 1, and 2 for the demo's roman targets)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --jobs' processes
    args = parser.parse_args(argv)
    if args.worker:
        return run_as_worker(Pipeline(args.preset, Path(args.output_dir), args.languages, args.launcher, args.force,
                                      args.targets, worker=True))  # fmt: skip
    return run_pipeline(args.preset, args.output_dir, args.languages, args.launcher, args.force, args.targets,
                        args.jobs)


if __name__ == "__main__":
    main()
