"""Publishing: the upload folder of each stage, the cards and their model-index, loading what was published (with
avalign, as remote code without it, as stock Parakeet), the corpus and Space folders, and the Hub calls (mocked)."""

import json
import re
import shutil
from pathlib import Path

import jinja2
import numpy as np
import evaluate
import PIL.Image
import pytest
import soundfile as sf
import torch
from datasets import load_dataset, load_from_disk
from huggingface_hub import DatasetCard, HfApi, ModelCard, SpaceCard
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer
from transformers.models.parakeet import ParakeetFeatureExtractor, ParakeetProcessor

from avalign.hub_cards import render
from avalign.modeling import (
    FastConformerAlignmentConfig,
    FastConformerConfig,
    FastConformerCTCTDTConfig,
    FastConformerForCTCTDT,
    FastConformerForImageAlignment,
    FastConformerForMaskedTokenPrediction,
    FastConformerMaskedTokenPredictionConfig,
    SpeechLLMForConditionalGeneration,
    train_tokenizer,
)
from avalign.spaces import app
from avalign.training import publish
from avalign.training.evaluation import asr_error_rates
from avalign.training.precision import choose_precision

NAMESPACE = "someone"
LANGUAGES = ("hi", "en")
SYSTEMS, FRACTIONS, SPLITS, DECODINGS = ("aligned", "baseline"), ("0.25", "1.0"), ("test", "test_ood"), ("tdt", "ctc")
REMOTE_CODE = {"configuration_fastconformer.py", "modeling_fastconformer.py", "pipeline_fastconformer.py", "tdt_loss.py",
               "tdt_kernels.py"}
MODEL_FILES = {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", *REMOTE_CODE}
STOCK_FILES = {"config.json", "generation_config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
               "tokenizer_config.json"}  # fmt: skip
EXPECTED_FILES = {
    "pretrain": MODEL_FILES,
    "align": MODEL_FILES,
    "asr": MODEL_FILES | {"tokenizer.json", "tokenizer_config.json", "processor_config.json", "plots/per_language.png"}
    | {f"{export}/{name}" for export in ("parakeet-ctc", "parakeet-tdt") for name in STOCK_FILES},
}
MODEL_CLASSES = {"pretrain": FastConformerForMaskedTokenPrediction, "align": FastConformerForImageAlignment,
                 "asr": FastConformerForCTCTDT}  # fmt: skip


# ----------------------------------------------------------------------------------------- a tiny finished run
def training_metrics(**extra) -> dict:
    precision = {f"precision_{key}": value for key, value in choose_precision("auto", "cpu").to_dict().items()}
    return {"global_step": 3, "epochs": 1.5, "train_seconds": 2.0, "audio_seconds": 36.0, "skipped_nonfinite": 0,
            "skipped_rows": {}, "last_loss": 2.5, "data_skips": {"too_short": 1}, "hyperparameters": precision,
            **extra}  # fmt: skip


def scores(rng) -> dict:
    rates = lambda: {"wer": float(rng.uniform(0.2, 0.9)), "cer": float(rng.uniform(0.05, 0.5)), "num_utterances": 3}  # noqa: E731
    return {"overall": rates(), "per_language": {language: rates() for language in LANGUAGES}, "skipped": {}}


def comparison_entry(rng) -> dict:
    aligned, baseline = float(rng.uniform(0.1, 0.5)), float(rng.uniform(0.1, 0.5))
    difference = aligned - baseline
    return {"metric": "cer", "aligned": aligned, "baseline": baseline, "difference": difference,
            "ci_low": difference - 0.05, "ci_high": difference + 0.05, "p_value": float(rng.uniform())}  # fmt: skip


def fake_results(rng) -> dict:
    """results.json of the layout's schema with random rates."""
    return {
        "preset": "smoke",
        "languages": list(LANGUAGES),
        "fractions": [float(f) for f in FRACTIONS],
        "timings_seconds": {"corpus": 1.0, "pretrain": 2.0, "align": 2.0, "asr/aligned-f1.0": 2.0},
        "teacher": {"caption_recall_at_1": 0.75, "teacher_calls": 8, "unique_images": 8},
        "align": {"recall_before": {"recall@1": 0.1, "recall@5": 0.4}, "recall_after": {"recall@1": 0.3, "recall@5": 0.8}},
        "asr": {system: {fraction: {split: {decoding: scores(rng) for decoding in DECODINGS} for split in SPLITS}
                         for fraction in FRACTIONS} for system in SYSTEMS},  # fmt: skip
        "comparison": {fraction: {split: {decoding: {group: comparison_entry(rng) for group in (*LANGUAGES, "overall")}
                                          for decoding in DECODINGS} for split in SPLITS} for fraction in FRACTIONS},
    }  # fmt: skip


def save_stage(model, folder: Path, metrics: dict, tokenizer=None) -> None:
    """A stage folder as the trainer leaves it, with checkpoints/ and logs/ that must never be published."""
    model.save_pretrained(folder)
    ParakeetFeatureExtractor().save_pretrained(folder)
    if tokenizer is not None:
        ParakeetProcessor(ParakeetFeatureExtractor(), tokenizer).save_pretrained(folder)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "checkpoints" / "step-3").mkdir(parents=True)
    torch.save({"step": 3}, folder / "checkpoints" / "step-3" / "optimizer.bin")
    (folder / "logs").mkdir()
    (folder / "logs" / "events.out.tfevents.0").write_bytes(b"\0")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, smoke_corpus, unified_model_dir):
    """corpus, pretrain, align, asr/{aligned-f0.25, aligned-f1.0, baseline-f1.0}, unified/zeroshot-hi-aligned, plots,
    results.json and results-roman.json; tiny, untrained."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    shutil.copytree(smoke_corpus, run / "corpus")
    encoder = FastConformerConfig.from_preset("tiny").to_dict()
    pretrain = FastConformerMaskedTokenPredictionConfig(encoder_config=encoder, codebook_size=32, mask_block_size=8)
    save_stage(FastConformerForMaskedTokenPrediction(pretrain), run / "pretrain",
               training_metrics(eval_metrics={"masked_loss": 3.1, "masked_accuracy": 0.07}))  # fmt: skip
    align = FastConformerAlignmentConfig(encoder_config=encoder, image_embedding_dim=24)
    save_stage(FastConformerForImageAlignment(align), run / "align",
               training_metrics(recall_before={"recall@1": 0.1, "recall@5": 0.4},
                                recall_after={"recall@1": 0.3, "recall@5": 0.8}))  # fmt: skip
    transcripts = load_from_disk(str(smoke_corpus))["train"]["transcript"]
    tokenizer = train_tokenizer(transcripts, vocab_size=300, shrink_to_fit=True)
    asr = FastConformerForCTCTDT(
        FastConformerCTCTDTConfig(encoder_config=encoder, vocab_size=len(tokenizer), decoder_hidden_size=32,
                                  tdt_prune_range=4)  # as the demo recipe trains it
    )
    for name in ("aligned-f0.25", "aligned-f1.0", "baseline-f1.0"):
        save_stage(asr, run / "asr" / name, training_metrics(train_utterances=20, vocab_size=len(tokenizer),
                                                             eval_metrics={"loss": 9.0, "ctc_cer": 0.9}), tokenizer)  # fmt: skip
    (run / "plots").mkdir()
    PIL.Image.new("RGB", (8, 8), "white").save(run / "plots" / "per_language.png")
    PIL.Image.new("RGB", (8, 8), "white").save(run / "plots" / "per_language-roman.png")  # of report-roman.md
    (run / "results.json").write_text(json.dumps(fake_results(np.random.default_rng(0))))
    unified = Path(shutil.copytree(unified_model_dir[0], run / "unified" / "zeroshot-hi-aligned"))
    (unified / "metrics.json").write_text(json.dumps(training_metrics(trainable_parameters=1234, speech_languages=["en"])))
    (run / "results-roman.json").write_text(json.dumps({"zero_shot": fake_zero_shot(np.random.default_rng(1))}))
    return run


ZERO_SHOT_VIEWS = ("roman", "cascade_char", "cascade_lm", "unified")  # romanized output, then the native script


def fake_zero_shot(rng) -> dict:
    """results-roman.json's zero_shot section: per held-out language, the CER of each system in each output, aligned
    vs baseline per output, and the unified model against each cascade."""
    def cer():
        value = float(rng.uniform(0.2, 0.9))
        return {"cer": value, "wer": float(rng.uniform(0.5, 1.0)), "ci_low": value - 0.05, "ci_high": value + 0.05,
                "distinct_hypotheses": 3, "distinct_references": 4}  # fmt: skip

    return {language: {**{view: {system: cer() for system in SYSTEMS} for view in ZERO_SHOT_VIEWS},
                       **{f"{view}_comparison": comparison_entry(rng) for view in ZERO_SHOT_VIEWS},
                       "unified_vs_cascade": {system: {cascade: comparison_entry(rng) for cascade in ZERO_SHOT_VIEWS[1:3]}
                                              for system in SYSTEMS}}
            for language in LANGUAGES}  # fmt: skip


def fake_build_gallery(run_dir, output_dir, max_images=48, split="test"):
    """Stands in for spaces.app.build_gallery (tested in test_space.py): two images, no teacher needed."""
    output_dir.mkdir(parents=True)
    images = [{"file": f"img{i}.png", "caption": "", "image_id": f"img{i}"} for i in range(2)]
    for image in images:
        PIL.Image.new("RGB", (4, 4)).save(output_dir / image["file"])
    (output_dir / "gallery.json").write_text(json.dumps({"teacher": "fake", "images": images, "skipped": {},
                                                         "run_dir": str(run_dir)}))  # fmt: skip
    return output_dir


@pytest.fixture(scope="module")
def published(run_dir, tmp_path_factory):
    """`publish_all` as a dry run: {corpus, pretrain, align, asr, asr-baseline, metric, space: folder}."""
    output_dir = tmp_path_factory.mktemp("published")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app, "build_gallery", fake_build_gallery)
        folders = publish.publish_all(run_dir, NAMESPACE, dry_run=True, output_dir=output_dir)
    names = ("corpus", "pretrain", "align", "asr", "asr-baseline", "unified", "metric", "space")
    assert folders == {name: output_dir / name for name in names}
    return folders


def relative_files(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


# ----------------------------------------------------------------------------------------------- stage folders
@pytest.mark.parametrize("stage", publish.STAGES)
def test_stage_folder_holds_exactly_the_model_files(published, run_dir, stage):
    folder = published[stage]
    assert relative_files(folder) == EXPECTED_FILES[stage]
    source = run_dir / ("asr/aligned-f1.0" if stage == "asr" else stage)  # stage 3 default: largest fraction
    assert (folder / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModel"].endswith(
        MODEL_CLASSES[stage].__name__
    )


def test_cards_link_the_neighbouring_stages_and_show_the_metrics(published):
    cards = {stage: ModelCard.load(published[stage] / "README.md") for stage in publish.STAGES}
    url = f"https://huggingface.co/{NAMESPACE}"
    assert cards["pretrain"].data.base_model is None and f"{url}/avalign-align)" in cards["pretrain"].text
    assert cards["align"].data.base_model == f"{NAMESPACE}/avalign-pretrain"
    assert f"{url}/avalign-pretrain)" in cards["align"].text and f"{url}/avalign-asr)" in cards["align"].text
    assert cards["asr"].data.base_model == f"{NAMESPACE}/avalign-align"
    assert "| masked-token accuracy | 7.0 % |" in cards["pretrain"].text
    assert "| after alignment (this model) | 30.0 % | 80.0 % |" in cards["align"].text
    asr = cards["asr"].text
    assert "### test_ood (out-of-domain) · CTC decoding" in asr and "![per_language.png](plots/per_language.png)" in asr
    assert "-roman.png" not in asr and "### Zero-shot languages: romanized output and native script" in asr
    assert all(f"| {language} | roman |" in asr and f"| {language} | unified |" in asr for language in LANGUAGES)
    assert "The TDT loss\nwas pruned: the joint at 4 states a frame" in asr  # the recipe's pruned loss, named
    for card in cards.values():
        assert card.data.datasets == [f"{NAMESPACE}/avalign-corpus"] and card.data.language == list(LANGUAGES)
        assert "{{" not in card.text and "trust_remote_code=True" in card.text
        assert re.search(r"Precision: (bf16|fp32) on .* \(CPU capability \w+; auto: ", card.text)  # issue 18


@pytest.mark.parametrize("stage", [*publish.STAGES, "unified"])
def test_the_code_in_each_card_runs(published, stage, tmp_path, monkeypatch):
    """Every ```python block of the card, with the repo id pointing at the local folder (and the unified card's other
    base LLM at the one it ships)."""
    monkeypatch.chdir(tmp_path)
    samples = check_inputs()[0][0]
    sf.write("clip.wav", samples, 16000)
    card = (published[stage] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)
    assert len(blocks) == (4 if stage == "asr" else 2)
    names = {"audio_16khz": samples, "base_llm": str(published[stage] / "llm")}
    for block in blocks:
        exec(block.replace(f'"{NAMESPACE}/{publish.REPO_NAMES[stage]}"', f'"{published[stage]}"'), names)


def test_unified_card_names_the_base_llm_and_shows_the_zero_shot_table(published, unified_model_dir):
    folder, base_llm = published["unified"], unified_model_dir[1]
    card = ModelCard.load(folder / "README.md")
    assert card.data.language == ["hi"] and card.data.datasets == [f"{NAMESPACE}/avalign-corpus"]
    assert f"`LlamaForCausalLM` from `{base_llm}`" in card.text and "include_llm=True" in card.text
    assert "LoRA of rank 4, alpha 32" in card.text and "1,234 trainable parameters" in card.text
    assert "### Zero-shot languages" in card.text and "| hi | aligned |" in card.text and "{{" not in card.text
    assert "llm_name_or_path=" in card.text and "--targets roman" in card.text
    assert {"model.safetensors", "adapter/adapter_config.json", "llm/config.json", "llm/model.safetensors",
            "preprocessor_config.json", "tokenizer.json"} <= relative_files(folder)  # fmt: skip
    assert json.loads((folder / "config.json").read_text())["llm_name_or_path"] == "llm"
    model = AutoModel.from_pretrained(folder)  # the base LLM from its own llm/
    assert isinstance(model, SpeechLLMForConditionalGeneration)
    assert all(isinstance(text, str) for text in model.generate(audio=[check_inputs()[0][0]], languages=["hi"]))


def test_baseline_card_starts_from_stage_1(run_dir, tmp_path):
    folder = publish.publish_stage(run_dir, "asr", f"{NAMESPACE}/avalign-asr-baseline", system="baseline",
                                   fraction=1.0, dry_run=True, output_dir=tmp_path / "baseline")  # fmt: skip
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == f"{NAMESPACE}/avalign-pretrain"
    assert "without alignment" in card.text


def test_eval_results_round_trip_from_results_json(published, run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    card = ModelCard.load(published["asr"] / "README.md")
    written = publish.model_card(run_dir, "asr", f"{NAMESPACE}/avalign-asr").data.eval_results
    assert card.data.eval_results == written
    loaded = {(r.dataset_split, r.dataset_config, r.metric_config, r.metric_type): r.metric_value
              for r in card.data.eval_results}  # fmt: skip
    evaluation = results["asr"]["aligned"]["1.0"]
    expected = {
        (split, language, decoding, metric): round(100 * group[metric], 2)
        for split in SPLITS for decoding in DECODINGS
        for language, group in {**evaluation[split][decoding]["per_language"], "all": evaluation[split][decoding]["overall"]}.items()
        for metric in ("wer", "cer")
    }  # fmt: skip
    assert loaded == expected and len(card.data.eval_results) == len(expected)
    assert {r.task_type for r in card.data.eval_results} == {"automatic-speech-recognition"}
    assert {r.dataset_type for r in card.data.eval_results} == {f"{NAMESPACE}/avalign-corpus"}


# --------------------------------------------------------------------------------- loading what was published
def check_inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    samples = [0.1 * torch.randn(n, generator=generator).numpy() for n in (16000, 11000)]
    inputs = ParakeetFeatureExtractor()(samples, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
    return samples, inputs.input_features, inputs.attention_mask


def labels_before_the_cap(output, cap: int) -> list[int]:
    """The labels of one TDT decode up to where `max_symbols_per_step` first forces a frame advance: stock TDT
    generate has no per-frame cap (benchmarks/bench_greedy_decoding.max_symbols_check), so the two agree up to there."""
    labels, frames, durations = output.sequences[0], output.frame_timestamps[0], output.token_durations[0]
    run = 0
    for i, (frame, duration) in enumerate(zip(frames, durations)):
        same_frame = i > 0 and durations[i - 1] == 0 and frames[i - 1] == frame
        run = (run + 1 if same_frame else 1) if duration == 0 else 0
        if run == cap:
            return labels[: i + 1]
    return labels


def stage_output(model, features, mask) -> torch.Tensor:
    """One tensor per stage to compare across loaders: encoder states, audio embeddings or CTC logits."""
    if isinstance(model, FastConformerForImageAlignment):
        return model.embed_audio(features, mask)[0]
    if isinstance(model, FastConformerForCTCTDT):
        return model(features, mask).ctc_logits
    return model.encoder(features, mask).last_hidden_state


@pytest.fixture(scope="module")
def expected_outputs(published, tmp_path_factory):
    """Each published stage loaded here (avalign installed), its outputs on fixed inputs, saved for subprocesses."""
    samples, features, mask = check_inputs()
    outputs = {}
    with torch.no_grad():
        for stage in publish.STAGES:
            model = AutoModel.from_pretrained(published[stage]).eval()
            assert type(model) is MODEL_CLASSES[stage]
            outputs[stage] = stage_output(model, features, mask)
        asr_model, tokenizer = AutoModel.from_pretrained(published["asr"]).eval(), AutoTokenizer.from_pretrained(published["asr"])
        ctc = asr_model.transcribe(features, mask, decoding="ctc").sequences
        lengths = mask.sum(-1).tolist()  # TDT one utterance at a time: stock generate decodes past a padded item's end
        decoded = [asr_model.transcribe(features[i : i + 1, :n], mask[i : i + 1, :n]) for i, n in enumerate(lengths)]
    tdt = [output.sequences[0] for output in decoded]
    tdt_prefixes = [labels_before_the_cap(output, asr_model.config.max_symbols_per_step) for output in decoded]
    texts = {name: [tokenizer.decode(ids, group_tokens=False) for ids in sequences]
             for name, sequences in (("ctc", ctc), ("tdt", tdt))}  # fmt: skip
    path = tmp_path_factory.mktemp("expected") / "expected.pt"
    torch.save({"samples": [torch.from_numpy(clip) for clip in samples], "features": features, "mask": mask,
                "outputs": outputs, "tdt": tdt, "tdt_prefixes": tdt_prefixes, "texts": texts}, path)  # fmt: skip
    return path


def test_published_folders_load_with_avalign(published, run_dir, expected_outputs):
    saved = torch.load(expected_outputs)
    for stage in publish.STAGES:
        source = AutoModel.from_pretrained(publish.stage_folder(run_dir, stage)).eval()
        with torch.no_grad():
            torch.testing.assert_close(saved["outputs"][stage], stage_output(source, saved["features"], saved["mask"]))
    assert type(AutoFeatureExtractor.from_pretrained(published["asr"])) is ParakeetFeatureExtractor


LOAD_SAVED = """
from pathlib import Path
import torch
folders, saved = [Path(folder) for folder in sys.argv[1:-1]], torch.load(sys.argv[-1])
features, mask = saved["features"], saved["mask"]
"""
REMOTE_CODE_CHECK = """
from transformers import AutoModel
for folder in folders:
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert "avalign" not in type(model).__module__, type(model).__module__
    with torch.no_grad():
        if folder.name == "align":
            output = model.embed_audio(features, mask)[0]
        elif folder.name == "asr":
            output = model(features, mask).ctc_logits
        else:
            output = model.encoder(features, mask).last_hidden_state
    torch.testing.assert_close(output, saved["outputs"][folder.name])
    print("REMOTE", folder.name, type(model).__name__)
"""
STOCK_PARAKEET_CHECK = """
from transformers import AutoProcessor, ParakeetForCTC, ParakeetForTDT
folder = [folder for folder in folders if folder.name == "asr"][0]
processor = AutoProcessor.from_pretrained(folder / "parakeet-ctc")
inputs = processor([s.numpy() for s in saved["samples"]], sampling_rate=16000, return_tensors="pt")
torch.testing.assert_close(inputs.input_features, features)
ctc = ParakeetForCTC.from_pretrained(folder / "parakeet-ctc").eval()
torch.testing.assert_close(ctc(**inputs).logits, saved["outputs"]["asr"])
assert processor.batch_decode(ctc.generate(**inputs)) == saved["texts"]["ctc"]
processor = AutoProcessor.from_pretrained(folder / "parakeet-tdt")
tdt = ParakeetForTDT.from_pretrained(folder / "parakeet-tdt").eval()
blank = tdt.config.blank_token_id
for samples, expected, prefix, text in zip(saved["samples"], saved["tdt"], saved["tdt_prefixes"],
                                           saved["texts"]["tdt"]):
    one = processor([samples.numpy()], sampling_rate=16000, return_tensors="pt")
    generated = tdt.generate(**one).sequences  # the export's generation config keeps durations out of the argmax
    labels = [t for t in generated[0].tolist() if t != blank]
    assert prefix and labels[: len(prefix)] == prefix, (generated, expected)  # equal up to avalign's per-frame cap
    if prefix == expected:  # the cap never acted: the whole transcript agrees
        assert labels == expected and processor.batch_decode(generated, skip_special_tokens=True)[0] == text
print("STOCK", type(ctc).__name__, type(tdt).__name__)
"""


@pytest.fixture(scope="module")
def stdout_without_avalign(published, expected_outputs, run_without_avalign) -> str:
    """One subprocess where avalign cannot be imported: the three stages as remote code, then the stock exports."""
    script = LOAD_SAVED + REMOTE_CODE_CHECK + STOCK_PARAKEET_CHECK
    return run_without_avalign(script, *(published[stage] for stage in publish.STAGES), expected_outputs)


def test_remote_code_loads_every_stage_where_avalign_is_not_installed(stdout_without_avalign):
    for stage in publish.STAGES:
        assert f"REMOTE {stage} {MODEL_CLASSES[stage].__name__}" in stdout_without_avalign


def test_stock_parakeet_exports_run_without_custom_code(stdout_without_avalign):
    assert "STOCK ParakeetForCTC ParakeetForTDT" in stdout_without_avalign


# ------------------------------------------------------------------------------------------ corpus and Space
def test_corpus_folder_loads_with_load_dataset(published, smoke_corpus):
    folder = published["corpus"]
    loaded, original = load_dataset(str(folder)), load_from_disk(str(smoke_corpus))
    assert list(loaded) == list(original)
    for split in original:
        assert loaded[split]["utterance_id"] == original[split]["utterance_id"]
    assert loaded["train"][0]["audio"]["bytes"] == original["train"][0]["audio"]["bytes"]
    card, source = DatasetCard.load(folder / "README.md"), DatasetCard.load(smoke_corpus / "README.md")
    assert card.text == source.text and card.data.pretty_name == source.data.pretty_name


def test_space_folder(published, run_dir):
    folder = published["space"]
    files = relative_files(folder)
    assert {"app.py", "requirements.txt", "screenshot.png", "README.md", "gallery/gallery.json"} <= files
    assert {path for path in files if path.startswith("examples/")} and not any("__pycache__" in path for path in files)
    gallery = json.loads((folder / "gallery" / "gallery.json").read_text())
    assert gallery["run_dir"] == str(run_dir)
    card, source = SpaceCard.load(folder / "README.md"), SpaceCard.load(Path(app.__file__).parent / "README.md")
    models = [f"{NAMESPACE}/avalign-asr", f"{NAMESPACE}/avalign-align", f"{NAMESPACE}/avalign-asr-baseline",
              f"{NAMESPACE}/avalign-unified"]
    assert card.data.to_dict() == {**source.data.to_dict(), "models": models,
                                   "datasets": [f"{NAMESPACE}/avalign-corpus"]}  # fmt: skip
    assert f'Client("{NAMESPACE}/avalign")' in card.text and "holds 2 pictures" in card.text


def test_metric_folder_is_an_evaluate_metric_space(published, smoke_corpus):
    """The published module loads with evaluate by path, offline, and scores like avalign's own metrics."""
    folder = published["metric"]
    assert relative_files(folder) == {"avalign-asr-error-rates.py", "app.py", "requirements.txt", "README.md"}
    card = SpaceCard.load(folder / "README.md")
    assert card.data.sdk == "gradio" and "metric" in card.data.tags and card.data.app_file == "app.py"
    assert f'evaluate.load("{NAMESPACE}/avalign-asr-error-rates")' in (folder / "app.py").read_text()
    metric = evaluate.load(str(folder / "avalign-asr-error-rates.py"))
    references = load_from_disk(str(smoke_corpus))["test"]["transcript"]
    predictions = [text[: len(text) // 2] for text in references]
    assert metric.compute(predictions=predictions, references=references) == asr_error_rates.error_rates(
        predictions, references
    )


def test_space_without_build_gallery_says_so(run_dir, tmp_path, monkeypatch):
    monkeypatch.delattr(app, "build_gallery")
    folder = publish.build_space_folder(run_dir, tmp_path / "space", NAMESPACE)
    assert not (folder / "gallery").exists()
    assert "avalign.spaces.app has no build_gallery" in (folder / "README.md").read_text()


def test_requirements_pin_avalign_to_a_commit():
    requirements = "# avalign\navalign @ git+https://github.com/avalign/avalign.git\ntorch>=2.4\n"
    pinned = publish.pin_avalign(requirements, "0123abc")
    assert pinned == requirements.replace("avalign.git\n", "avalign.git@0123abc\n")
    assert publish.pin_avalign(pinned, "fed987") == requirements.replace("avalign.git\n", "avalign.git@fed987\n")
    assert publish.pin_avalign(requirements, None) == requirements


# ------------------------------------------------------------------------------------------------ Hub calls
@pytest.fixture
def hub_calls(monkeypatch):
    """HfApi.create_repo / upload_folder / add_space_variable recorded instead of sent (with the uploaded files)."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        calls.append(("upload", kwargs["repo_id"], {**kwargs, "files": relative_files(Path(kwargs["folder_path"]))}))

    def add_space_variable(self, repo_id, key, value):
        calls.append(("variable", repo_id, {key: value}))

    for method in (create_repo, upload_folder, add_space_variable):
        monkeypatch.setattr(HfApi, method.__name__, method)
    return calls


def test_upload_creates_the_repo_and_uploads_the_folder(run_dir, hub_calls, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    repo = f"{NAMESPACE}/avalign-align"
    assert publish.publish_stage(run_dir, "align", repo, private=True) is None  # built in a temporary folder
    (create, created, create_kwargs), (upload, uploaded, upload_kwargs) = hub_calls
    assert (create, created, upload, uploaded) == ("create", repo, "upload", repo)
    assert create_kwargs["repo_type"] == upload_kwargs["repo_type"] == "model"
    assert create_kwargs["exist_ok"] is True and create_kwargs["private"] is True
    assert upload_kwargs["files"] == EXPECTED_FILES["align"]


def test_space_upload_sets_the_model_variables(run_dir, hub_calls, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(app, "build_gallery", fake_build_gallery)
    repo = f"{NAMESPACE}/avalign"
    publish.publish(lambda out: publish.build_space_folder(run_dir, out, NAMESPACE), repo, dry_run=False,
                    output_dir=tmp_path / "space", repo_type="space",
                    variables={"AVALIGN_MODEL": f"{NAMESPACE}/avalign-asr"})  # fmt: skip
    assert [(kind, repo_id) for kind, repo_id, _ in hub_calls] == [("create", repo), ("upload", repo), ("variable", repo)]
    assert hub_calls[0][2]["repo_type"] == "space" and hub_calls[0][2]["space_sdk"] == "gradio"
    assert hub_calls[1][2]["folder_path"] == tmp_path / "space" and "app.py" in hub_calls[1][2]["files"]
    assert hub_calls[2][2] == {"AVALIGN_MODEL": f"{NAMESPACE}/avalign-asr"}


def test_missing_token_fails_before_any_work(run_dir, hub_calls, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="HF_TOKEN is not set"):
        publish.publish_stage(run_dir, "pretrain", f"{NAMESPACE}/avalign-pretrain", output_dir=tmp_path / "out")
    with pytest.raises(RuntimeError, match="HF_TOKEN is not set"):
        publish.publish_all(run_dir, NAMESPACE)
    assert hub_calls == [] and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- bad input, CLI
def test_bad_publishing_requests_raise_clear_errors(run_dir, tmp_path):
    with pytest.raises(ValueError, match="--dry-run needs --output-dir"):
        publish.publish_stage(run_dir, "align", "a/b", dry_run=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "stale.bin").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not empty"):
        publish.publish_stage(run_dir, "align", "a/b", dry_run=True, output_dir=tmp_path / "full")
    with pytest.raises(FileNotFoundError, match="baseline-f0.5: no such stage folder"):
        publish.publish_stage(run_dir, "asr", "a/b", system="baseline", fraction=0.5, dry_run=True,
                              output_dir=tmp_path / "missing")  # fmt: skip
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken, ignore=shutil.ignore_patterns("asr"))
    (broken / "align" / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json is missing"):
        publish.build_stage_folder(broken, "align", tmp_path / "broken", "a/b")


def test_cli_dry_run_of_one_stage(run_dir, tmp_path):
    publish.main(["--run-dir", str(run_dir), "--stage", "pretrain", "--repo-id", f"{NAMESPACE}/p", "--dry-run",
                  "--output-dir", str(tmp_path / "out")])  # fmt: skip
    assert relative_files(tmp_path / "out") == EXPECTED_FILES["pretrain"]
    with pytest.raises(SystemExit):
        publish.parse_args(["--run-dir", str(run_dir), "--stage", "all", "--dry-run", "--output-dir", "x"])


def test_templates_refuse_missing_context():
    with pytest.raises(jinja2.UndefinedError):
        render("pretrain_card.md.j2", card_data="title: x")
