"""Publish a pipeline run to the Hugging Face Hub: a model repo per stage, the corpus as a dataset, and the Space.

    python -m avalign.training.publish --run-dir DIR --stage asr --repo-id NAME/avalign-asr \
        [--system aligned --fraction 1.0] [--dry-run --output-dir OUT] [--private]
    python -m avalign.training.publish --run-dir DIR --stage all --namespace NAME [--dry-run --output-dir OUT]

A stage's upload folder holds only what loads the model (never checkpoints/, logs/ or optimizer states):

    model.safetensors                        weights (or the shards and model.safetensors.index.json)
    config.json                              with `auto_map` pointing at the remote code save_pretrained wrote:
    configuration_fastconformer.py, modeling_fastconformer.py, tdt_loss.py,
    tdt_kernels.py                           (remote code runs the loss's PyTorch path: the C++ source is not copied)
    preprocessor_config.json                 ParakeetFeatureExtractor
    README.md                                the model card (hub_cards/<stage>_card.md.j2)
    pipeline_fastconformer.py                the pipeline class the stage-3 config names in `custom_pipelines`
    stage 3 also:
    tokenizer.json, tokenizer_config.json    ParakeetTokenizer
    processor_config.json                    ParakeetProcessor (feature extractor + tokenizer) for AutoProcessor
    plots/*.png                              the run's figures (DIR/plots)
    parakeet-ctc/, parakeet-tdt/             the same weights as stock ParakeetForCTC / ParakeetForTDT with a
                                             ParakeetProcessor: they run with no custom code

A run of the `--targets roman` pipeline with a unified model (`unified/zeroshot-<language>-aligned`, Zero-AVSR's
speech -> LLM -> native script) also publishes that model as `avalign-unified`: its folder saved with the base LLM in
llm/ (`save_pretrained(..., include_llm=True)`) and a card from hub_cards/unified_card.md.j2.

The stage-3 card carries the run's WER / CER (in %) per language and split as model-index `eval_results`. Cards link
the neighbouring stages as https://huggingface.co/NAMESPACE/<REPO_NAMES[stage]>, so publish a run under one
namespace. `publish_all` publishes, in this order, the corpus (Parquet per split + its card), the three stages
(stage 3: the aligned system at the largest fraction, and the baseline at that fraction as `avalign-asr-baseline`
when the run has it), the unified model when the run has one, the scoring as an `evaluate` metric Space (`avalign-asr-error-rates`: the module, its card, a
Gradio widget) and the Space (app.py, requirements.txt pinned to this avalign commit, README from
hub_cards/space_readme.md.j2, a gallery and example clips built from the run). Uploads go through `HfApi` with the
token in HF_TOKEN; `--dry-run` writes the folders to --output-dir and uploads nothing.
"""

import argparse
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from importlib import import_module
from importlib.resources import files
from pathlib import Path

from datasets import load_from_disk
from huggingface_hub import DatasetCard, EvalResult, HfApi, ModelCard, ModelCardData, SpaceCard, SpaceCardData
from safetensors import safe_open
from transformers import AutoFeatureExtractor, AutoTokenizer
from transformers.models.parakeet import ParakeetProcessor

from avalign.hub_cards import render
from avalign.modeling import FastConformerForCTCTDT, SpeechLLMForConditionalGeneration
from avalign.modeling.modeling_speech_llm import LLM_FOLDER

from .corpus.synth import statistics_table
from .evaluation import asr_error_rates, report
from .logs import setup_logging
from .schema import LANGUAGE_NAMES

logger = logging.getLogger("avalign")

AVALIGN_URL = "https://github.com/avalign/avalign"
STAGES = ("pretrain", "align", "asr")
REPO_NAMES = {
    "pretrain": "avalign-pretrain",
    "align": "avalign-align",
    "asr": "avalign-asr",
    "asr-baseline": "avalign-asr-baseline",
    "unified": "avalign-unified",
    "corpus": "avalign-corpus",
    "metric": "avalign-asr-error-rates",
    "space": "avalign",
}
STAGE_TITLES = {
    "pretrain": "stage 1, self-supervised pretraining",
    "align": "stage 2, audio–image alignment",
    "asr": "stage 3, CTC + TDT speech recognition",
}
PIPELINE_TAGS = {"pretrain": "feature-extraction", "align": "feature-extraction", "asr": "automatic-speech-recognition"}
STAGE_TAGS = {
    "pretrain": ["self-supervised-learning", "best-rq"],
    "align": ["audio-image-alignment", "audio-image-retrieval"],
    "asr": ["ctc", "tdt", "parakeet"],
}
PREPROCESSOR_FILE = "preprocessor_config.json"
ASR_PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "processor_config.json")
STOCK_EXPORTS = {"parakeet-ctc": ("to_parakeet_ctc", "ctc"), "parakeet-tdt": ("to_parakeet_tdt", "tdt")}  # export, decoder
ENCODER_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_kernel_size",
                  "subsampling_factor", "num_mel_bins")  # fmt: skip
CONFIG_BOILERPLATE = {"architectures", "auto_map", "dtype", "encoder_config", "model_type", "transformers_version",
                      "initializer_range"}  # fmt: skip
SPACE_FILES = ("app.py", "requirements.txt", "screenshot.png")
# Space variable -> the repo (REPO_NAMES key) it names
SPACE_VARIABLES = {"AVALIGN_MODEL": "asr", "AVALIGN_ALIGN_MODEL": "align", "AVALIGN_BASELINE_MODEL": "asr-baseline",
                   "AVALIGN_UNIFIED_MODEL": "unified"}  # fmt: skip
UNIFIED_TAGS = ["avalign", "zero-avsr", "speech-llm", "lora", "romanization", "zero-shot", "synthetic-speech"]


# ----------------------------------------------------------------------------------------------------- the run
def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: publish a run the pipeline has finished")
    return json.loads(path.read_text(encoding="utf-8"))


def fraction_key(fraction: float) -> str:
    """0.1 -> "0.1", 1 -> "1.0": the fraction keys of results.json and the fraction in stage-3 folder names."""
    return str(float(fraction))


def largest_fraction(run_dir: Path, system: str) -> float:
    """The largest fine-tuning fraction with a stage-3 folder DIR/asr/<system>-f<fraction>."""
    fractions = [float(folder.name.rpartition("-f")[2]) for folder in (run_dir / "asr").glob(f"{system}-f*")]
    if not fractions:
        raise FileNotFoundError(f"{run_dir / 'asr'}: no stage-3 folder {system}-f<fraction>")
    return max(fractions)


def stage_folder(run_dir: Path, stage: str, system: str = "aligned", fraction: float | None = None) -> Path:
    """DIR/pretrain, DIR/align or DIR/asr/<system>-f<fraction> (by default the largest fraction)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if stage == "asr":
        fraction = largest_fraction(run_dir, system) if fraction is None else fraction
        folder = run_dir / "asr" / f"{system}-f{fraction_key(fraction)}"
    else:
        folder = run_dir / stage
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such stage folder in the run")
    return folder


def has_baseline(run_dir: Path) -> bool:
    """Whether the run has a baseline stage-3 model at the aligned system's largest fraction."""
    fraction = fraction_key(largest_fraction(run_dir, "aligned"))
    return (run_dir / "asr" / f"baseline-f{fraction}").is_dir()


def unified_folder(run_dir: Path) -> Path | None:
    """DIR/unified/zeroshot-<language>-aligned of the first held-out language (by name), or None when the run has no
    unified model (a native-target run, or a roman one from before the unified model)."""
    folders = sorted((Path(run_dir) / "unified").glob("zeroshot-*-aligned"))
    return folders[0] if folders else None


def weight_files(folder: Path) -> list[Path]:
    """model.safetensors, or model.safetensors.index.json and the shards it lists."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [index, *(folder / shard for shard in sorted(set(read_json(index)["weight_map"].values())))]
    return [folder / "model.safetensors"]


def model_files(folder: Path, stage: str) -> list[Path]:
    """The files of a stage folder that make up the published model; raises naming the first one missing."""
    auto_map = read_json(folder / "config.json").get("auto_map")
    if not auto_map:
        raise ValueError(f"{folder / 'config.json'}: no auto_map; save the model after `import avalign.modeling`")
    remote_code = {folder / f"{reference.split('.')[0]}.py" for reference in auto_map.values()}
    remote_code |= set(folder.glob("*.py"))  # the modules save_pretrained copied with them (tdt_loss.py)
    needed = [folder / "config.json", folder / PREPROCESSOR_FILE, *weight_files(folder), *sorted(remote_code)]
    if stage == "asr":
        needed += [folder / name for name in ASR_PROCESSOR_FILES]
    for path in needed:
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: {path.name} is missing; it is needed to publish the {stage} stage")
    return needed


def parameter_count(weights: list[Path]) -> int:
    """Values stored in the safetensors files (buffers such as the stage-1 quantizer included)."""
    total = 0
    for path in (path for path in weights if path.suffix == ".safetensors"):
        with safe_open(path, framework="pt") as tensors:
            total += sum(math.prod(tensors.get_slice(name).get_shape()) for name in tensors.keys())
    return total


# ------------------------------------------------------------------------------------------------------ links
def repo_id(namespace: str, name: str) -> str:
    """The repo of `name` (a stage, "corpus" or "space") of a run published under `namespace`."""
    return f"{namespace}/{REPO_NAMES[name]}"


def hub_url(repo: str, repo_type: str = "model") -> str:
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]
    return f"https://huggingface.co/{prefix}{repo}"


def previous_stage(stage: str, system: str) -> str | None:
    """The stage whose encoder this one starts from (the baseline ASR skips alignment)."""
    if stage == "asr":
        return "align" if system == "aligned" else "pretrain"
    return {"pretrain": None, "align": "pretrain"}[stage]


def stage_links(stage: str, system: str, namespace: str) -> list[dict]:
    """Rows of the card's link table: previous stage, next stage, corpus and Space."""
    previous, following = previous_stage(stage, system), {"pretrain": "align", "align": "asr", "asr": None}[stage]
    links = []
    if previous:
        links.append({"role": f"previous: {STAGE_TITLES[previous]}", "repo_id": repo_id(namespace, previous)})
    if following:
        links.append({"role": f"next: {STAGE_TITLES[following]}", "repo_id": repo_id(namespace, following)})
    for link in links:
        link["url"] = hub_url(link["repo_id"])
    return links + corpus_and_space_links(namespace)


def corpus_and_space_links(namespace: str) -> list[dict]:
    """The link rows every model card ends with: the corpus and the Space."""
    return [{"role": "corpus", "repo_id": repo_id(namespace, "corpus"),
             "url": hub_url(repo_id(namespace, "corpus"), "dataset")},
            {"role": "Space (try it)", "repo_id": repo_id(namespace, "space"),
             "url": hub_url(repo_id(namespace, "space"), "space")}]  # fmt: skip


# ------------------------------------------------------------------------------------------------------ cards
def corpus_context(stats: dict, namespace: str) -> dict:
    return {
        "repo_id": repo_id(namespace, "corpus"),
        "url": hub_url(repo_id(namespace, "corpus"), "dataset"),
        "preset": stats["preset"],
        "languages": [{"code": code, "name": LANGUAGE_NAMES.get(code, code)} for code in stats["languages"]],
        "table": statistics_table(stats["splits"]),
        "utterances_per_image": stats["config"]["utterances_per_image"],
    }


def model_context(folder: Path, config: dict) -> dict:
    encoder = config["encoder_config"]
    return {
        "class_name": config["architectures"][0],
        "parameters": parameter_count(weight_files(folder)),
        "encoder": [(key, encoder[key]) for key in ENCODER_FIELDS],
        "head": [(key, value) for key, value in sorted(config.items()) if key not in CONFIG_BOILERPLATE],
    }


def training_context(stage: str, preset: str, metrics: dict, targets: str = "native") -> dict:
    """The Training section (hub_cards/training_section.md.j2) of a stage trained by training/train_<stage>.py."""
    config_name = f"{stage}_{preset}.yaml"
    command = f"python -m avalign.training.pipeline --preset {preset} --output-dir runs/{preset}"
    return {
        "script": f"training/train_{stage}.py",
        "command": command + ("" if targets == "native" else f" --targets {targets}"),
        "steps": metrics["global_step"],
        "epochs": metrics["epochs"],
        "train_seconds": metrics["train_seconds"],
        "audio_hours": metrics["audio_seconds"] / 3600,
        "skips": metrics.get("data_skips", {}),
        "precision": precision_text(metrics.get("hyperparameters", {})),
        "config_name": config_name,
        "config": (Path(__file__).parent / "configs" / config_name).read_text(encoding="utf-8").strip(),
    }


def precision_text(hyperparameters: dict) -> str:
    """"bf16 on Intel(R) Xeon(R) (AVX512; auto: ...)" from a stage's recorded precision choice ("" before issue 18)."""
    if "precision_precision" not in hyperparameters:
        return ""
    return (f"{hyperparameters['precision_precision']} on {hyperparameters['precision_cpu_model']} (CPU capability "
            f"{hyperparameters['precision_cpu_capability']}; {hyperparameters['precision_reason']})")  # fmt: skip


def frame_seconds(folder: Path, encoder_config: dict) -> float:
    """Seconds per encoder frame: hop length x subsampling factor / sampling rate (0.08 s for FastConformer)."""
    features = read_json(folder / PREPROCESSOR_FILE)
    return features["hop_length"] * encoder_config["subsampling_factor"] / features["sampling_rate"]


def asr_eval_results(results: dict, system: str, fraction: str, corpus_repo: str, corpus_name: str) -> list:
    """EvalResult per split, language (and "all"), decoding and metric, in %: the card's model-index."""
    evaluation = results["asr"][system][fraction]  # {split: {decoding: scores}}
    entries = []
    for split, by_decoding in evaluation.items():
        languages = dict.fromkeys(language for scores in by_decoding.values() for language in scores["per_language"])
        for language in [*languages, "all"]:
            for decoding, scores in by_decoding.items():
                group = scores["overall"] if language == "all" else scores["per_language"].get(language)
                entries += [
                    EvalResult(
                        task_type="automatic-speech-recognition", task_name="Speech recognition",
                        dataset_type=corpus_repo, dataset_name=corpus_name, dataset_config=language,
                        dataset_split=split, metric_type=metric, metric_name=f"{metric.upper()} ({decoding.upper()})",
                        metric_config=decoding, metric_value=round(100 * group[metric], 2),
                    )  # fmt: skip
                    for metric in ("wer", "cer")
                    if group
                ]
    return entries


def asr_context(results: dict, system: str, fraction: float, metrics: dict, run_dir: Path, namespace: str) -> dict:
    key = fraction_key(fraction)
    if key not in results["asr"].get(system, {}):
        raise ValueError(f"{run_dir / 'results.json'}: no evaluation of {system} at fraction {key}; evaluate it first")
    runs = report.runs_for(results, key)
    tables = [
        {"split": split, "decoding": decoding, "table": report.table(results, key, split, decoding)}
        for split in report.splits_of(runs)
        for decoding in report.decodings_of(runs)
        if report.scores_for(runs, split, decoding)
    ]
    aligned = f"stage-2 aligned encoder ([{repo_id(namespace, 'align')}]({hub_url(repo_id(namespace, 'align'))}))"
    return {
        "system": system,
        "other_systems": [other for other in runs if other != system],
        "system_description": aligned if system == "aligned" else "stage-1 pretrained encoder, without alignment",
        "fraction": key,
        "fraction_percent": f"{100 * fraction:g}",
        "train_utterances": metrics["train_utterances"],
        "results_tables": tables,
        "plots": [path.name for path in report_plots(run_dir)],
        "zero_shot_table": zero_shot_section(run_dir),
    }


def report_plots(run_dir: Path) -> list[Path]:
    """The figures of the run's (native-target) report.md; those of report-roman.md end in "-roman"."""
    return sorted(path for path in (run_dir / "plots").glob("*.png") if not path.stem.endswith("-roman"))


def zero_shot_section(run_dir: Path) -> str:
    """The zero-shot table of the run's `--targets roman` pipeline (results-roman.json), or "" if it has none."""
    roman = run_dir / "results-roman.json"
    zero_shot = json.loads(roman.read_text(encoding="utf-8")).get("zero_shot") if roman.is_file() else None
    return "\n".join(report.zero_shot_table(zero_shot)) if zero_shot else ""


def stage_metrics_context(stage: str, metrics: dict, results: dict) -> dict:
    """What the stage's Results section shows (stage 3 reads results.json through `asr_context` instead)."""
    if stage == "pretrain":
        return {"metrics": metrics["eval_metrics"]}
    if stage == "align":
        teacher = results.get("teacher", {})
        return {"metrics": {"recall_before": metrics["recall_before"], "recall_after": metrics["recall_after"],
                            "teacher_recall_at_1": teacher.get("caption_recall_at_1")}}  # fmt: skip
    return {}


def model_card(
    run_dir: Path, stage: str, repo: str, system: str = "aligned", fraction: float | None = None
) -> ModelCard:
    """The stage's model card: README text from hub_cards/<stage>_card.md.j2 with `ModelCardData` front matter."""
    folder = stage_folder(run_dir, stage, system, fraction)
    namespace = repo.split("/")[0]
    results, stats = read_json(run_dir / "results.json"), read_json(run_dir / "corpus" / "stats.json")
    metrics, config = read_json(folder / "metrics.json"), read_json(folder / "config.json")
    remote_code = sorted(path.name for path in model_files(folder, stage) if path.suffix == ".py")
    corpus = corpus_context(stats, namespace)
    context = {
        "stage": stage,
        "stage_number": STAGES.index(stage) + 1,
        "title": f"avalign {STAGE_TITLES[stage]}",
        "repo_id": repo,
        "preset": results["preset"],
        "source_url": AVALIGN_URL,
        "links": stage_links(stage, system, namespace),
        "corpus": corpus,
        "model": model_context(folder, config),
        "remote_code": remote_code,
        "config": config,
        "encoder_config": config["encoder_config"],
        "training": training_context(stage, results["preset"], metrics),
        "frame_seconds": f"{frame_seconds(folder, config['encoder_config']):g}",
        **stage_metrics_context(stage, metrics, results),
    }
    previous = previous_stage(stage, system)
    card_data = ModelCardData(
        model_name=repo.split("/")[-1],
        language=stats["languages"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag=PIPELINE_TAGS[stage],
        tags=["avalign", "fastconformer", "synthetic-speech", *STAGE_TAGS[stage]],
        datasets=[corpus["repo_id"]],
        base_model=repo_id(namespace, previous) if previous else None,
    )
    if stage == "asr":
        fraction = float(folder.name.rpartition("-f")[2])
        context |= asr_context(results, system, fraction, metrics, run_dir, namespace)
        context["title"] += f" ({system}, {context['fraction_percent']} % of the transcripts)"
        card_data.metrics = ["wer", "cer"]
        card_data.eval_results = asr_eval_results(
            results, system, fraction_key(fraction), corpus["repo_id"], f"avalign embedded corpus ({stats['preset']})"
        )
    return ModelCard(render(f"{stage}_card.md.j2", card_data=card_data.to_yaml(), **context))


def run_relative(path: str, run_dir: Path) -> str:
    """`path` relative to the run directory ("text_lm") when it lies in it; else as given (a Hub id)."""
    try:
        return Path(path).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return path


def unified_card(run_dir: Path, folder: Path, published: Path, repo: str) -> ModelCard:
    """The unified model's card (hub_cards/unified_card.md.j2): `folder` is the run's model, `published` the folder
    it was saved to with its base LLM in llm/."""
    namespace, stats = repo.split("/")[0], read_json(run_dir / "corpus" / "stats.json")
    config, metrics = read_json(folder / "config.json"), read_json(folder / "metrics.json")
    held_out = folder.name.removeprefix("zeroshot-").removesuffix("-aligned")
    corpus = corpus_context(stats, namespace)
    asr = {"role": "native-script ASR (stage 3)", "repo_id": repo_id(namespace, "asr"),
           "url": hub_url(repo_id(namespace, "asr"))}  # fmt: skip
    context = {
        "title": f"avalign unified model: speech → LLM → native script (zero-shot {held_out})",
        "repo_id": repo,
        "source_url": AVALIGN_URL,
        "preset": stats["preset"],
        "links": [asr, *corpus_and_space_links(namespace)],
        "corpus": corpus,
        "config": config,
        "held_out": held_out,
        "speech_languages": metrics.get("speech_languages", []),
        "trainable_parameters": metrics.get("trainable_parameters"),
        "llm_name": run_relative(config["llm_name_or_path"], run_dir),
        "llm_class": read_json(published / LLM_FOLDER / "config.json")["architectures"][0],
        "romanizer": run_relative(config["romanizer"], run_dir),
        "training": training_context("speech_llm", stats["preset"], metrics, targets="roman"),
        "zero_shot_table": zero_shot_section(run_dir),
    }
    card_data = ModelCardData(
        model_name=repo.split("/")[-1], language=list(config["languages"]), license="apache-2.0",
        library_name="transformers", pipeline_tag="automatic-speech-recognition", tags=UNIFIED_TAGS,
        datasets=[corpus["repo_id"]],
    )  # fmt: skip
    return ModelCard(render("unified_card.md.j2", card_data=card_data.to_yaml(), **context))


# ---------------------------------------------------------------------------------------------- upload folders
def empty_folder(path: Path) -> Path:
    """Create `path`; refuse one with files in it (they would be uploaded too)."""
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} is not empty: give a new --output-dir so that no stale file is uploaded")
    path.mkdir(parents=True, exist_ok=True)
    return path


def export_stock_parakeet(folder: Path, output_dir: Path) -> None:
    """parakeet-ctc/ and parakeet-tdt/: the stage-3 model as stock ParakeetForCTC / ParakeetForTDT + ParakeetProcessor."""
    model = FastConformerForCTCTDT.from_pretrained(folder)
    feature_extractor, tokenizer = AutoFeatureExtractor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    for name, (export, decoder_type) in STOCK_EXPORTS.items():
        getattr(model, export)().save_pretrained(output_dir / name)
        # the decoder type tells batch_decode whether to merge repeated tokens (CTC frame paths) or keep them (TDT)
        ParakeetProcessor(feature_extractor, tokenizer, decoder_type=decoder_type).save_pretrained(output_dir / name)


def build_stage_folder(
    run_dir: Path, stage: str, output_dir: Path, repo: str, system: str = "aligned", fraction: float | None = None
) -> Path:
    """Write the upload folder of one stage (see the module docstring) into `output_dir`."""
    run_dir, output_dir = Path(run_dir), empty_folder(Path(output_dir))
    folder = stage_folder(run_dir, stage, system, fraction)
    needed = model_files(folder, stage)
    card = model_card(run_dir, stage, repo, system, fraction)
    for path in needed:
        shutil.copy2(path, output_dir / path.name)
    if stage == "asr":
        (output_dir / "plots").mkdir()
        for plot in report_plots(run_dir):
            shutil.copy2(plot, output_dir / "plots" / plot.name)
        export_stock_parakeet(folder, output_dir)
    card.save(output_dir / "README.md")
    return output_dir


def build_unified_folder(run_dir: Path, output_dir: Path, repo: str) -> Path:
    """The run's unified model (`unified_folder`) saved with its base LLM in llm/ (include_llm: the folder loads with
    no other download), and its card."""
    run_dir, output_dir = Path(run_dir), empty_folder(Path(output_dir))
    folder = unified_folder(run_dir)
    if folder is None:
        raise FileNotFoundError(f"{run_dir / 'unified'}: no zeroshot-<language>-aligned unified model in the run")
    SpeechLLMForConditionalGeneration.from_pretrained(folder).save_pretrained(output_dir, include_llm=True)
    unified_card(run_dir, folder, output_dir, repo).save(output_dir / "README.md")
    return output_dir


def build_corpus_folder(run_dir: Path, output_dir: Path) -> Path:
    """The embedded corpus as a Hub dataset: data/<split>-00000-of-00001.parquet, stats.json and the dataset card
    (DIR/corpus/README.md) with a `configs` entry naming every split, so `load_dataset(repo)` finds them."""
    corpus_dir, output_dir = Path(run_dir) / "corpus", empty_folder(Path(output_dir))
    corpus = load_from_disk(str(corpus_dir))
    (output_dir / "data").mkdir()
    data_files = []
    for split, dataset in corpus.items():
        dataset.to_parquet(str(output_dir / "data" / f"{split}-00000-of-00001.parquet"))
        data_files.append({"split": split, "path": f"data/{split}-*.parquet"})
    shutil.copy2(corpus_dir / "stats.json", output_dir / "stats.json")
    card = DatasetCard.load(corpus_dir / "README.md")
    card.data.configs = [{"config_name": "default", "data_files": data_files}]
    card.save(output_dir / "README.md")
    return output_dir


def avalign_revision() -> str | None:
    """The git commit of the avalign source tree, or None when it is not a git checkout."""
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain"], capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    if dirty:
        logger.warning("the avalign checkout %s has uncommitted changes; the Space installs commit %s", source, commit)
    return commit


def pin_avalign(requirements: str, revision: str | None) -> str:
    """requirements.txt with the `avalign @ git+URL` line pinned to `revision` (unchanged when it is None)."""
    if revision is None:
        logger.warning("avalign is not a git checkout: the Space's requirements.txt installs avalign unpinned")
        return requirements
    return re.sub(r"^(avalign @ git\+[^@\s]+)(@\S+)?$", rf"\1@{revision}", requirements, flags=re.MULTILINE)


def space_extras(run_dir: Path, output_dir: Path) -> dict:
    """gallery/ and examples/ through spaces.app's build_gallery and write_examples; a clear note for what is left out."""
    try:
        app = import_module("avalign.spaces.app")
    except ImportError as error:  # the Space's own dependencies (gradio) are an optional extra
        app, reason = None, f"avalign.spaces.app cannot be imported here ({error}); install avalign[space]"
    else:
        reason = "avalign.spaces.app has no build_gallery"
    extras = {"gallery_size": 0, "gallery_note": reason, "example_count": 0}
    if hasattr(app, "build_gallery"):
        gallery = app.build_gallery(run_dir, output_dir / "gallery")
        extras["gallery_size"] = len(read_json(gallery / "gallery.json")["images"])
    else:
        logger.warning("Space without a gallery: %s", reason)
    if hasattr(app, "write_examples"):
        extras["example_count"] = len(app.write_examples(run_dir, output_dir / "examples"))
    return extras


def space_card() -> SpaceCard:
    """spaces/README.md: the Space's front matter (sdk, sdk_version) and documentation."""
    return SpaceCard.load(files("avalign.spaces").joinpath("README.md"))


def build_space_folder(run_dir: Path, output_dir: Path, namespace: str) -> Path:
    """The Space: app.py, requirements.txt (avalign pinned to this commit), screenshot.png, README.md from
    hub_cards/space_readme.md.j2 with spaces/README.md's front matter and text, gallery/ and examples/."""
    run_dir, output_dir = Path(run_dir), empty_folder(Path(output_dir))
    source = files("avalign.spaces")
    for name in SPACE_FILES:
        if not source.joinpath(name).is_file():
            raise FileNotFoundError(f"avalign.spaces has no {name}: reinstall avalign from its source tree")
    shutil.copy2(source.joinpath("app.py"), output_dir / "app.py")
    shutil.copy2(source.joinpath("screenshot.png"), output_dir / "screenshot.png")
    revision = avalign_revision()
    requirements = source.joinpath("requirements.txt").read_text(encoding="utf-8")
    (output_dir / "requirements.txt").write_text(pin_avalign(requirements, revision), encoding="utf-8")
    source_card = space_card()
    baseline = repo_id(namespace, "asr-baseline") if has_baseline(run_dir) else None
    unified = repo_id(namespace, "unified") if unified_folder(run_dir) else None
    models = [repo_id(namespace, "asr"), repo_id(namespace, "align"), *(repo for repo in (baseline, unified) if repo)]
    front_matter = SpaceCardData(**source_card.data.to_dict(), models=models, datasets=[repo_id(namespace, "corpus")])
    readme = render(
        "space_readme.md.j2",
        front_matter=front_matter.to_yaml(),
        space_documentation=source_card.text.strip().replace("OWNER/avalign", repo_id(namespace, "space")),
        asr_repo_id=models[0],
        align_repo_id=models[1],
        baseline_repo_id=baseline,
        unified_repo_id=unified,
        corpus_repo_id=repo_id(namespace, "corpus"),
        avalign_revision=f"commit {revision}" if revision else "(not a git checkout)",
        **space_extras(run_dir, output_dir),
    )
    (output_dir / "README.md").write_text(readme, encoding="utf-8")
    return output_dir


def build_metric_folder(output_dir: Path, repo: str) -> Path:
    """The scoring as an `evaluate` metric Space: <repo name>.py (what `evaluate.load(repo)` fetches), README.md
    from hub_cards/metric_card.md.j2, app.py (evaluate's Gradio widget) and requirements.txt."""
    output_dir = empty_folder(Path(output_dir))
    module_file = f"{repo.split('/')[-1]}.py"
    shutil.copy2(asr_error_rates.__file__, output_dir / module_file)
    (output_dir / "app.py").write_text(
        "import evaluate\nfrom evaluate.utils import launch_gradio_widget\n\n"
        f'launch_gradio_widget(evaluate.load("{repo}"))\n', encoding="utf-8"
    )
    (output_dir / "requirements.txt").write_text("evaluate>=0.4\ndatasets\njiwer>=3.0\n", encoding="utf-8")
    documentation = asr_error_rates.__doc__.split("\n\n", 2)[-1].strip()  # after the usage example
    readme = render("metric_card.md.j2", repo_id=repo, module_file=module_file, documentation=documentation,
                    source_url=AVALIGN_URL, gradio_version=space_card().data.sdk_version)  # fmt: skip
    (output_dir / "README.md").write_text(readme, encoding="utf-8")
    return output_dir


# ------------------------------------------------------------------------------------------------------ upload
def hub_token() -> str:
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise RuntimeError(
            "HF_TOKEN is not set: export a Hugging Face token with write access "
            "(https://huggingface.co/settings/tokens), or pass --dry-run --output-dir OUT to only write the folders"
        )
    return token


def upload(folder: Path, repo: str, token: str, repo_type: str = "model", private: bool = False,
           variables: dict | None = None) -> str:  # fmt: skip
    """Create the repo if needed and upload `folder` as one commit; `variables` become Space variables."""
    api = HfApi(token=token)
    url = api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True,
                          space_sdk="gradio" if repo_type == "space" else None)  # fmt: skip
    api.upload_folder(repo_id=repo, folder_path=folder, repo_type=repo_type, commit_message="Publish an avalign run")
    for key, value in (variables or {}).items():
        api.add_space_variable(repo, key, value)
    logger.info("published %s -> %s", folder, url)
    return str(url)


def publish(build, repo: str, dry_run: bool, output_dir: Path | None, private: bool = False,
            repo_type: str = "model", variables: dict | None = None) -> Path | None:  # fmt: skip
    """`build(folder)` writes an upload folder; upload it unless `dry_run` (then it stays in `output_dir`).
    Returns the folder written to `output_dir`, or None when it was built in a temporary folder."""
    if dry_run:
        if output_dir is None:
            raise ValueError("--dry-run needs --output-dir: the folder is written there instead of uploaded")
        return build(Path(output_dir))
    token = hub_token()  # before any work: a missing token fails at once
    if output_dir is not None:
        upload(build(Path(output_dir)), repo, token, repo_type, private, variables)
        return Path(output_dir)
    with tempfile.TemporaryDirectory(prefix="avalign-publish-") as scratch:
        upload(build(Path(scratch) / "upload"), repo, token, repo_type, private, variables)
    return None


def publish_stage(run_dir, stage: str, repo: str, system: str = "aligned", fraction: float | None = None,
                  dry_run: bool = False, output_dir=None, private: bool = False) -> Path | None:  # fmt: skip
    """Build one stage's upload folder and upload it to the model repo `repo` (or only write it, `dry_run`)."""
    return publish(lambda folder: build_stage_folder(Path(run_dir), stage, folder, repo, system, fraction),
                   repo, dry_run, output_dir, private)  # fmt: skip


def publish_all(run_dir, namespace: str, dry_run: bool = False, output_dir=None, private: bool = False) -> dict:
    """The corpus, the three stages (stage 3: aligned at the largest fraction), the unified model where the run has
    one, and the Space under `namespace`; with `output_dir`, each in OUTPUT_DIR/<name> (REPO_NAMES' keys). Returns {name: folder or None}."""
    run_dir = Path(run_dir)
    if not dry_run:
        hub_token()

    def folder(name: str) -> Path | None:
        return None if output_dir is None else Path(output_dir) / name

    published = {"corpus": publish(lambda out: build_corpus_folder(run_dir, out), repo_id(namespace, "corpus"),
                                   dry_run, folder("corpus"), private, repo_type="dataset")}  # fmt: skip
    for stage in STAGES:
        published[stage] = publish_stage(run_dir, stage, repo_id(namespace, stage), dry_run=dry_run,
                                         output_dir=folder(stage), private=private)  # fmt: skip
    if has_baseline(run_dir):  # the Space's "aligned vs baseline" view needs it
        published["asr-baseline"] = publish_stage(run_dir, "asr", repo_id(namespace, "asr-baseline"), "baseline",
                                                  largest_fraction(run_dir, "aligned"), dry_run,
                                                  folder("asr-baseline"), private)  # fmt: skip
    if unified_folder(run_dir):  # a --targets roman run's speech -> LLM model (the Space's unified tab)
        unified_repo = repo_id(namespace, "unified")
        published["unified"] = publish(lambda out: build_unified_folder(run_dir, out, unified_repo), unified_repo,
                                       dry_run, folder("unified"), private)  # fmt: skip
    metric_repo = repo_id(namespace, "metric")
    published["metric"] = publish(lambda out: build_metric_folder(out, metric_repo), metric_repo, dry_run,
                                  folder("metric"), private, repo_type="space")  # fmt: skip
    variables = {key: repo_id(namespace, repo) for key, repo in SPACE_VARIABLES.items() if repo in published}
    published["space"] = publish(lambda out: build_space_folder(run_dir, out, namespace), repo_id(namespace, "space"),
                                 dry_run, folder("space"), private, repo_type="space", variables=variables)  # fmt: skip
    return published


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="a pipeline output directory")
    parser.add_argument("--stage", required=True, choices=[*STAGES, "all"])
    parser.add_argument("--repo-id", help="the model repo of one stage, e.g. NAME/avalign-asr")
    parser.add_argument("--namespace", help="with --stage all: the user or organisation to publish under")
    parser.add_argument("--system", default="aligned", choices=["aligned", "baseline"], help="stage 3 only")
    parser.add_argument("--fraction", type=float, help="stage 3 only (default: the largest fraction of the run)")
    parser.add_argument("--dry-run", action="store_true", help="write the folder(s) to --output-dir, upload nothing")
    parser.add_argument("--output-dir", type=Path, help="where the upload folder(s) are written")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    if args.stage == "all" and not args.namespace:
        parser.error("--stage all needs --namespace")
    if args.stage != "all" and (not args.repo_id or args.repo_id.count("/") != 1):
        parser.error("--repo-id NAMESPACE/NAME is required for one stage")
    if args.dry_run and args.output_dir is None:
        parser.error("--dry-run needs --output-dir")
    return args


def main(argv=None):
    setup_logging()
    args = parse_args(argv)
    if args.stage == "all":
        return publish_all(args.run_dir, args.namespace, args.dry_run, args.output_dir, args.private)
    return publish_stage(args.run_dir, args.stage, args.repo_id, args.system, args.fraction, args.dry_run,
                         args.output_dir, args.private)  # fmt: skip


if __name__ == "__main__":
    main()
