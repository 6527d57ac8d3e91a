"""When does alignment help? Stage-2 variants as arms beside the controls, over seeds, in one report (issue 19).

    python -m avalign.training.study --preset demo      (make study; after make demo, which it reuses)

Arms (`ARMS`): each is an encoder that stage 3 fine-tunes at the preset's fraction with several seeds.

    baseline      stage 1 -> 3 (no stage 2)
    continued     stage 1 continued for as many steps as stage 2 takes, on stage 2's audio, with its schedule: the
                  compute- and audio-matched baseline
    shuffled      stage 2 with each clip's image replaced by another image of the same language (does content count?)
    aligned       the paper's stage 2 (the demo's): the tiny SigLIP teacher, every layer updated
    oracle        stage 2 with the scene attributes as the image embedding: the most an image could teach
    random        stage 2 with a frozen, randomly initialised teacher: the least
    joint, ...    the stage-2 options of train_align.py (joint SSL loss, frozen lower blocks, pooled layer, negatives)

An arm "helps" only if it beats both the baseline and `continued`. Each difference is tested with a hierarchical
bootstrap (`metrics.hierarchical_bootstrap`): seeds of each arm resampled, then utterances (shared by both arms),
so that the interval covers run-to-run spread as well as test-set sampling. The arm to adopt is chosen on dev_ood;
test and test_ood are reported beside it, never used to choose.

It reuses the demo run's corpus, teacher cache and stage-1 encoder (training them first if absent), skips finished
runs and resumes interrupted ones (each training run from its checkpoints). It writes OUT/report.md,
OUT/results.json (per arm and seed: the prediction files) and OUT/plots/study.png.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from avalign.training import evaluate_asr, probe, teacher
from avalign.training.evaluation.metrics import edit_counts, hierarchical_bootstrap
from avalign.training.evaluation.asr_error_rates import corpus_rate
from avalign.training.logs import setup_logging
from avalign.training.pipeline import CONFIGS, PRESETS, Pipeline, fraction_dir, run_stages_0_1
from avalign.training.precision import choose_precision

logger = logging.getLogger("avalign")
SPLITS = ("dev", "dev_ood", "test", "test_ood")
SELECTION_SPLITS = ("dev", "dev_ood")
DECODINGS = ("tdt", "ctc")
TEACHERS = ("siglip", "oracle", "random")  # the tiny SigLIP trained by the demo, the bounds
CONTROLS = ("baseline", "continued", "shuffled")


@dataclass(frozen=True)
class Arm:
    """One encoder for stage 3: stage 1 alone (`baseline`), stage 1 continued (`continued`) or a stage 2 (`align`)
    with a teacher and train_align.py options."""

    kind: str = "align"
    teacher: str = "siglip"
    options: dict = field(default_factory=dict)
    description: str = ""


ARMS = {
    "baseline": Arm("baseline", description="stage 1 -> 3"),
    "continued": Arm("continued", description="stage 1 continued on stage 2's audio, stage 2's steps"),
    "aligned": Arm(description="the paper's stage 2: tiny SigLIP, every layer"),
    "shuffled": Arm(options={"image_pairing": "shuffled"}, description="images shuffled within a language"),
    "oracle": Arm(teacher="oracle", description="scene attributes as the teacher"),
    "random": Arm(teacher="random", description="a frozen random teacher"),
    "joint": Arm(options={"joint_ssl": True}, description="L_ssl + L_align on the same batches"),
    "joint-oracle": Arm(teacher="oracle", options={"joint_ssl": True}, description="joint with the oracle"),
    "frozen3": Arm(options={"freeze_layers": 3}, description="subsampling and blocks 1-3 frozen"),
    "layer4": Arm(options={"alignment_layer": 4}, description="the head pools block 4 of 6"),
    "language-negatives": Arm(options={"negatives": "language"}, description="negatives within a language"),
}  # fmt: skip


@dataclass(frozen=True)
class StudyPreset:
    pipeline: str  # the pipeline preset whose run (corpus, teacher, stage 1) the study reuses
    arms: tuple[str, ...]
    fraction: float = 0.1
    seeds: tuple[int, ...] = (0, 1, 2)  # stage 3 with each
    stage2_seeds: str = "first"  # "first": one stage-2 run per arm (seed 0); "each": one per stage-3 seed
    num_resamples: int = 2000
    probe_steps: int = 400  # linear CTC probe steps per layer


STUDY_PRESETS = {
    "smoke": StudyPreset("smoke", arms=("baseline", "continued", "aligned", "shuffled", "oracle", "random", "joint"),
                         fraction=0.25, seeds=(0, 1), num_resamples=200, probe_steps=20),
    # ordered so that --jobs 2 deals each worker a similar load; the other arms of ARMS run with --arms
    "demo": StudyPreset("demo", arms=("baseline", "continued", "aligned", "joint", "oracle", "shuffled", "random")),
}  # fmt: skip


class Study:
    """Trains and evaluates each arm x seed once (finished runs are skipped), then writes the report."""

    def __init__(self, preset: str, output_dir: Path, base_dir: Path, arms=None, seeds=None):
        self.preset_name, self.spec = preset, STUDY_PRESETS[preset]
        self.arms = tuple(arms or self.spec.arms)
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; the arms are {sorted(ARMS)}")
        self.seeds = tuple(self.spec.seeds if seeds is None else seeds)
        self.output_dir, self.base_dir = output_dir, base_dir
        self.base = Pipeline(self.spec.pipeline, base_dir)  # the demo run: corpus, teacher, stage 1
        self.pipeline = Pipeline(self.spec.pipeline, output_dir)  # this study's runs and their wall times
        self.languages = self.pipeline.languages

    # ------------------------------------------------------------------------------------------------ runs
    def run(self, jobs: int = 1) -> dict:
        """Train and evaluate every arm x seed (in `jobs` processes of one thread each when jobs > 1: a 2-core machine
        trains these small models ~1.4x faster as two 1-thread runs than as one 2-thread run), then the report."""
        started = time.perf_counter()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.corpus, self.teacher_dir, self.embeddings, self.pretrain = run_stages_0_1(self.base)
        if jobs > 1:
            self.run_in_parallel(jobs)
        self.run_only()  # with jobs > 1 every run has finished by now: each is skipped
        results = self.collect()
        results["probe"] = {arm: self.probe(arm) for arm in self.probed_arms(results["chosen_on_dev_ood"])}
        results["wall_seconds"] = round(time.perf_counter() - started, 1)
        write_study_report(results, self.output_dir)
        logger.info("study: %d arms x %d seeds in %.1f s; report %s", len(self.arms), len(self.seeds),
                    results["wall_seconds"], self.output_dir / "report.md")  # fmt: skip
        return results

    def run_in_parallel(self, jobs: int) -> None:
        """The arms dealt round-robin to `jobs` study processes (one thread each) that share this output directory."""
        command = [sys.executable, "-m", "avalign.training.study", "--preset", self.preset_name, "--output-dir",
                   str(self.output_dir), "--base-dir", str(self.base_dir), "--seeds", *map(str, self.seeds),
                   "--runs-only", "--arms"]  # fmt: skip
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        workers = [subprocess.Popen(command + list(self.arms[job::jobs]), env=environment) for job in range(jobs)]
        failed = [worker.args[-len(self.arms[job::jobs]):] for job, worker in enumerate(workers) if worker.wait()]
        if failed:
            raise RuntimeError(f"study workers failed for arms {failed}; rerun the study to resume them")

    def run_only(self) -> None:
        """A worker's part: train and evaluate its arms, no report."""
        self.corpus, self.teacher_dir, self.embeddings, self.pretrain = run_stages_0_1(self.base)
        for arm in self.arms:
            for seed in self.seeds:
                self.evaluate(arm, seed, self.fine_tune(arm, seed, self.encoder(arm, seed)))

    def stage2_seed(self, seed: int) -> int:
        return seed if self.spec.stage2_seeds == "each" else self.seeds[0]

    def encoder(self, arm: str, seed: int) -> Path:
        """The arm's encoder for stage-3 seed `seed` (trained here unless finished)."""
        spec = ARMS[arm]
        if spec.kind == "baseline":
            return self.pretrain
        seed = self.stage2_seed(seed)
        folder = self.stage2_dir(arm, seed)
        if folder.parent == self.base_dir:
            return folder
        schedule = stage2_schedule(self.spec.pipeline)
        if spec.kind == "continued":
            train = lambda: self.pipeline.train(  # noqa: E731
                "pretrain", "pretrain", corpus=self.corpus, init_model=self.pretrain, output_dir=folder,
                train_splits=["paired"], seed=seed, **schedule)  # fmt: skip
        else:
            teacher_path, embeddings = self.teacher(spec.teacher)
            train = lambda: self.pipeline.train(  # noqa: E731
                "align", "align", corpus=self.corpus, init_encoder=self.pretrain, teacher=teacher_path,
                embeddings_dir=embeddings, output_dir=folder, seed=seed, **spec.options)  # fmt: skip
        self.pipeline.stage(f"stage2/{folder.name}", folder / "metrics.json", train)
        return folder

    def stage2_dir(self, arm: str, seed: int) -> Path:
        reused = self.base_dir / "align"
        if arm == "aligned" and seed == 0 and (reused / "metrics.json").exists():
            return reused  # the pipeline's own stage 2: the same recipe and seed
        return self.output_dir / "stage2" / f"{arm}-s{seed}"

    def teacher(self, name: str) -> tuple[str, Path]:
        """(the --teacher of train_align, its embedding cache) for a teacher name."""
        if name == "siglip":
            return str(self.teacher_dir), self.embeddings
        if name == "oracle":
            return "oracle", self.output_dir / "embeddings" / "oracle"
        if name == "random":
            folder = teacher.save_random_teacher(self.teacher_dir, self.output_dir / "teachers" / "random")
            return str(folder), self.output_dir / "embeddings" / "random"
        raise ValueError(f"unknown teacher {name!r}; the study's teachers are {TEACHERS}")

    def asr_dir(self, arm: str, seed: int) -> Path:
        reused = self.base_dir / "asr" / fraction_dir(arm, self.spec.fraction)
        if arm in ("aligned", "baseline") and seed == 0 and (reused / "metrics.json").exists():
            return reused  # the pipeline's own stage 3 at this fraction: the same recipe and seed
        return self.output_dir / "asr" / f"{arm}-s{seed}"

    def fine_tune(self, arm: str, seed: int, encoder: Path) -> Path:
        folder = self.asr_dir(arm, seed)
        steps = PRESETS[self.spec.pipeline].asr_max_steps.get(self.spec.fraction)
        self.pipeline.stage(f"asr/{folder.name}", folder / "metrics.json", lambda: self.pipeline.train(
            "asr", "asr", corpus=self.corpus, init_encoder=encoder, train_fraction=self.spec.fraction,
            output_dir=folder, seed=seed, **({"max_steps": steps} if steps else {})))  # fmt: skip
        return folder

    def evaluate(self, arm: str, seed: int, model: Path) -> None:
        folder = self.eval_dir(arm, seed)
        self.pipeline.stage(f"evaluate/{folder.name}", folder / "results.json", lambda: (folder / "results.json").write_text(
            json.dumps(evaluate_asr.evaluate_models({folder.name: model}, self.corpus, folder, splits=SPLITS,
                                                    decodings=DECODINGS, fraction=self.spec.fraction,
                                                    comparisons={}), indent=2, ensure_ascii=False)))  # fmt: skip

    def eval_dir(self, arm: str, seed: int) -> Path:
        return self.output_dir / "eval" / f"{arm}-s{seed}"

    def predictions(self, arm: str, seed: int, split: str, decoding: str) -> Path:
        return self.eval_dir(arm, seed) / f"predictions-{arm}-s{seed}-{split}-{decoding}.jsonl"

    def probed_arms(self, chosen: dict) -> list[str]:
        """The layer-wise probe runs on the baseline, `continued`, the paper's recipe and the arm chosen on dev_ood."""
        probed = ("baseline", "continued", "aligned", chosen.get("arm"))
        return [arm for arm in dict.fromkeys(probed) if arm in self.arms]

    def probe(self, arm: str) -> dict:
        encoder = self.encoder(arm, self.seeds[0])
        result_file = self.output_dir / "probe" / f"{arm}.json"
        tokenizer_dir = self.asr_dir(self.arms[0], self.seeds[0])  # every stage-3 run trains the same tokenizer

        def run():
            result_file.parent.mkdir(parents=True, exist_ok=True)
            result = probe.probe_encoder(encoder, self.corpus, tokenizer_dir, self.embeddings, self.spec.fraction,
                                         self.spec.probe_steps, languages=self.languages)  # fmt: skip
            result_file.write_text(json.dumps(result, indent=2))

        self.pipeline.stage(f"probe/{arm}", result_file, run)
        return read_json(result_file)

    # ------------------------------------------------------------------------------------------------ results
    def collect(self) -> dict:
        """results.json: per arm its seeds' prediction files and CERs, mean and sd, and the differences to the
        baseline and `continued` (hierarchical bootstrap), stage-2 retrieval, and the arm chosen on dev_ood."""
        records = {(arm, split, decoding): [read_jsonl(self.predictions(arm, seed, split, decoding))
                                            for seed in self.seeds]
                   for arm in self.arms for split in SPLITS for decoding in DECODINGS}  # fmt: skip
        arms = {}
        for arm in self.arms:
            entry = {"description": ARMS[arm].description, "kind": ARMS[arm].kind, "teacher": ARMS[arm].teacher,
                     "options": ARMS[arm].options, "seeds": list(self.seeds), "cer": {}, "predictions": {},
                     "stage2": self.stage2_metrics(arm)}  # fmt: skip
            for split in SPLITS:
                for decoding in DECODINGS:
                    rates = [cer(run) for run in records[arm, split, decoding]]
                    entry["cer"].setdefault(split, {})[decoding] = {
                        "per_seed": rates, "mean": float(np.mean(rates)), "sd": float(np.std(rates, ddof=1))
                        if len(rates) > 1 else 0.0}  # fmt: skip
                    entry["predictions"].setdefault(split, {})[decoding] = [
                        str(self.predictions(arm, seed, split, decoding)) for seed in self.seeds]
            for reference in ("baseline", "continued"):
                if reference in self.arms and reference != arm:
                    entry[f"vs_{reference}"] = {split: {decoding: hierarchical_bootstrap(
                        records[arm, split, decoding], records[reference, split, decoding], "cer",
                        self.spec.num_resamples) for decoding in DECODINGS} for split in SPLITS}  # fmt: skip
            arms[arm] = entry
        precision = choose_precision("auto")
        return {
            "preset": self.spec.pipeline, "fraction": self.spec.fraction, "seeds": list(self.seeds),
            "stage2_seeds": self.spec.stage2_seeds, "base_dir": str(self.base_dir), "arms": arms,
            "chosen_on_dev_ood": choose_arm(arms),
            "timings_seconds": read_json(self.pipeline.state_file).get("timings_seconds", {}),
            "machine": {"cpu_model": precision.cpu_model, "cpu_capability": precision.cpu_capability,
                        "precision": precision.precision, "reason": precision.reason},
        }  # fmt: skip

    def stage2_metrics(self, arm: str) -> dict:
        """Retrieval before and after stage 2 (align arms) or the held-out masked accuracy (continued)."""
        if ARMS[arm].kind == "baseline":
            return {}
        metrics = read_json(self.stage2_dir(arm, self.stage2_seed(self.seeds[0])) / "metrics.json")
        keys = ("recall_before", "recall_after", "eval_metrics", "train_seconds", "global_step")
        return {key: metrics[key] for key in keys if key in metrics}


def stage2_schedule(pipeline_preset: str) -> dict:
    """Stage 2's steps, warm-up, learning rate and batch size (for `continued`, so that it matches stage 2)."""
    config = yaml.safe_load((CONFIGS / f"align_{pipeline_preset}.yaml").read_text())
    keys = ("max_steps", "warmup_steps", "learning_rate", "max_seconds_per_batch", "eval_steps", "save_steps")
    return {key: config[key] for key in keys if key in config}


def choose_arm(arms: dict) -> dict:
    """The stage-2 arm (not a control) with the lowest dev_ood CER, TDT and CTC averaged; and whether it beats the
    baseline and `continued` there (both intervals below 0)."""
    candidates = [arm for arm in arms if arm not in CONTROLS]
    if not candidates:
        return {}
    score = lambda arm: np.mean([arms[arm]["cer"]["dev_ood"][d]["mean"] for d in DECODINGS])  # noqa: E731
    best = min(candidates, key=score)
    beats = {reference: all(arms[best].get(f"vs_{reference}", {}).get("dev_ood", {}).get(d, {}).get("ci_high", 1) < 0
                            for d in DECODINGS) for reference in ("baseline", "continued")}  # fmt: skip
    return {"arm": best, "dev_ood_cer": float(score(best)), "beats_on_dev_ood": beats}


def cer(records: list[dict]) -> float:
    return corpus_rate(*edit_counts(records, "cer"))


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: rerun the study to evaluate this arm and seed")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


# ---------------------------------------------------------------------------------------------------- report
def write_study_report(results: dict, output_dir: Path) -> None:
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    (output_dir / "plots").mkdir(exist_ok=True)
    plot_study(results, output_dir / "plots" / "study.png")
    if results.get("probe"):
        plot_probe(results["probe"], output_dir / "plots" / "probe.png")
    (output_dir / "report.md").write_text(study_report(results))


def study_report(results: dict) -> str:
    arms, machine = results["arms"], results["machine"]
    lines = [f"# The alignment study · preset `{results['preset']}`", "",
             f"Stage 3 at fraction {results['fraction']} with seeds {results['seeds']} per arm (stage 2: "
             f"{'one run per seed' if results['stage2_seeds'] == 'each' else 'one run per arm, seed 0'}). CER in %, "
             f"mean ± sd over seeds. Machine: {machine['cpu_model']}, capability {machine['cpu_capability']}, "
             f"precision {machine['precision']}. Wall time of this call {results['wall_seconds'] / 60:.1f} min; the "
             f"study's runs took {sum(results['timings_seconds'].values()) / 60:.1f} min of stage time in all (with "
             "--jobs 2, two at a time).", "",
             "Differences are arm − reference in CER points with a 95 % hierarchical-bootstrap interval (seeds, then "
             "utterances): negative means the arm makes fewer errors; **bold** when the interval excludes 0. The arm "
             "to adopt is chosen on dev_ood; test and test_ood are read beside it, never used to choose.", "",
             "![study](plots/study.png)", ""]  # fmt: skip
    for decoding in DECODINGS:
        lines += [f"## CER by arm ({decoding.upper()})", "", "| arm | " + " | ".join(SPLITS) + " |",
                  "|---|" + "---:|" * len(SPLITS)]  # fmt: skip
        for arm, entry in arms.items():
            cells = [f"{100 * entry['cer'][s][decoding]['mean']:.1f} ± {100 * entry['cer'][s][decoding]['sd']:.1f}"
                     for s in SPLITS]  # fmt: skip
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        for reference in ("baseline", "continued"):
            lines += ["", f"Difference to `{reference}` ({decoding.upper()}):", "",
                      "| arm | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]  # fmt: skip
            for arm, entry in arms.items():
                if f"vs_{reference}" in entry:
                    cells = [difference_cell(entry[f"vs_{reference}"][s][decoding]) for s in SPLITS]
                    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Stage 2 per arm", "", "| arm | what | retrieval recall@1 before → after (test) | steps | seconds |",
              "|---|---|---:|---:|---:|"]  # fmt: skip
    for arm, entry in arms.items():
        stage2 = entry["stage2"]
        recall = "–"
        if "recall_after" in stage2:
            recall = (f"{100 * stage2['recall_before']['recall@1']:.1f} → {100 * stage2['recall_after']['recall@1']:.1f}"
                      f" (chance {100 / max(stage2['recall_after']['num_images'], 1):.1f})")
        elif stage2.get("eval_metrics"):
            recall = f"masked accuracy {100 * stage2['eval_metrics'].get('masked_accuracy', 0):.1f}"
        lines.append(f"| {arm} | {entry['description']} | {recall} | {stage2.get('global_step', '–')} | "
                     f"{stage2.get('train_seconds', 0):.0f} |")  # fmt: skip
    if results.get("probe"):
        lines += ["", "## Where the encoder changes: linear probes on each frozen layer", "",
                  "Layer 0 is the subsampling's output, k the output of block k. CTC: dev CER of a linear CTC head "
                  "trained on the fine-tuning fraction; retrieval: test audio -> image recall@1 through a linear map "
                  f"fitted on the paired pool (chance {100 * next(iter(results['probe'].values()))['chance']:.1f} %).",
                  "", "![probe](plots/probe.png)", "", "| arm | probe | " + " | ".join(
                      f"layer {k}" for k in next(iter(results["probe"].values()))["layers"]) + " |",
                  "|---|---|" + "---:|" * len(next(iter(results["probe"].values()))["layers"])]  # fmt: skip
        for arm, entry in results["probe"].items():
            lines.append(f"| {arm} | CTC dev CER | " + " | ".join(f"{100 * r:.1f}" for r in entry["ctc_dev_cer"]) + " |")
            lines.append(f"| {arm} | recall@1 | " + " | ".join(f"{100 * r:.1f}" for r in entry["recall@1"]) + " |")
    chosen = results["chosen_on_dev_ood"]
    if chosen:
        beats = chosen["beats_on_dev_ood"]
        lines += ["", "## The arm chosen on dev_ood", "",
                  f"`{chosen['arm']}` (dev_ood CER {100 * chosen['dev_ood_cer']:.1f} %, TDT and CTC averaged). It beats "
                  f"the baseline on dev_ood: {'yes' if beats['baseline'] else 'no'}; `continued`: "
                  f"{'yes' if beats['continued'] else 'no'} (both intervals below 0, TDT and CTC)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def difference_cell(entry: dict) -> str:
    text = f"{100 * entry['difference']:+.1f} [{100 * entry['ci_low']:+.1f}, {100 * entry['ci_high']:+.1f}]"
    return f"**{text}**" if entry["ci_low"] > 0 or entry["ci_high"] < 0 else text


def plot_study(results: dict, path: Path) -> None:
    """CER per arm on each split (bars: seed mean, whiskers: sd, dots: seeds), TDT and CTC side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results["arms"])
    figure, axes = plt.subplots(1, len(DECODINGS), figsize=(6 + 0.9 * len(arms), 4))
    width = 0.8 / len(SPLITS)
    for axis, decoding in zip(axes, DECODINGS):
        for i, split in enumerate(SPLITS):
            entries = [results["arms"][arm]["cer"][split][decoding] for arm in arms]
            x = np.arange(len(arms)) + (i - (len(SPLITS) - 1) / 2) * width
            axis.bar(x, [100 * e["mean"] for e in entries], width, yerr=[100 * e["sd"] for e in entries],
                     label=split, capsize=2)  # fmt: skip
            for position, entry in zip(x, entries):
                axis.scatter([position] * len(entry["per_seed"]), [100 * r for r in entry["per_seed"]], s=6, c="k")
        axis.set_xticks(np.arange(len(arms)), arms, rotation=30, ha="right")
        axis.set_title(f"{decoding.upper()} CER (%) at f{results['fraction']}")
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_probe(probes: dict, path: Path) -> None:
    """Per layer: the linear CTC probe's dev CER and the linear retrieval probe's recall@1, a line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ctc_axis, retrieval_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for arm, entry in probes.items():
        ctc_axis.plot(entry["layers"], [100 * r for r in entry["ctc_dev_cer"]], marker="o", label=arm)
        retrieval_axis.plot(entry["layers"], [100 * r for r in entry["recall@1"]], marker="o", label=arm)
    retrieval_axis.axhline(100 * next(iter(probes.values()))["chance"], color="grey", linestyle=":", label="chance")
    for axis, title in ((ctc_axis, "linear CTC probe: dev CER (%)"), (retrieval_axis, "retrieval probe: recall@1 (%)")):
        axis.set_xlabel("layer (0: subsampling)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> dict:
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(STUDY_PRESETS), default="demo")
    parser.add_argument("--output-dir", help="default runs/study (runs/study-<preset> for other presets)")
    parser.add_argument("--base-dir", help="the pipeline run to reuse (default runs/<preset>)")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), help="a subset of the preset's arms")
    parser.add_argument("--seeds", nargs="+", type=int, help="stage-3 seeds (default the preset's)")
    parser.add_argument("--jobs", type=int, default=1, help="study processes of one thread each (make study: 2)")
    parser.add_argument("--runs-only", action="store_true", help=argparse.SUPPRESS)  # a --jobs worker
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir or ("runs/study" if args.preset == "demo" else f"runs/study-{args.preset}"))
    base_dir = Path(args.base_dir or f"runs/{args.preset}")
    study = Study(args.preset, output_dir, base_dir, args.arms, args.seeds)
    if args.runs_only:
        return study.run_only()
    return study.run(jobs=args.jobs)


if __name__ == "__main__":
    main()
