"""The main job end to end on the smoke preset: every stage, results.json, the report, a second run that skips, and
the romanized-target run with its zero-shot protocol in the same directory."""

import dataclasses
import json

import pytest
from datasets import load_from_disk

from avalign.modeling.script_constraint import script_characters
from avalign.training import evaluate_asr, pipeline
from avalign.training.data.splits import load_splits
from avalign.training.study import read_jsonl


def corpus_sentences(output_dir, language: str) -> set[str]:
    corpus = load_from_disk(str(output_dir / "corpus"))
    return {sentence for split in corpus.values()
            for code, sentence in zip(split["language"], split["reference_transcript"]) if code == language}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("pipeline")
    results = pipeline.run_pipeline("smoke", output_dir, languages=["hi", "en"])
    return output_dir, results


def test_every_stage_leaves_its_model_and_metrics(smoke_run):
    output_dir, results = smoke_run
    stages = ["pretrain", "align", "asr/aligned-f1.0", "asr/baseline-f1.0", "asr/aligned-f0.25", "asr/scratch-f0.25"]
    for stage in stages:
        folder = output_dir / stage
        assert (folder / "model.safetensors").is_file() and (folder / "metrics.json").is_file(), stage
    assert (output_dir / "asr/aligned-f1.0/tokenizer.json").is_file()
    stage3 = json.loads((output_dir / "asr/aligned-f1.0/config.json").read_text())
    assert stage3["tdt_prune_range"] == 4  # the recipe's pruned TDT loss reached the model
    assert set(results["timings_seconds"]) >= {"corpus", "teacher", "pretrain", "align", "scratch", "evaluate/f1.0"}
    assert not (output_dir / "asr/scratch-f1.0").exists()  # the smoke preset runs the scratch control at 0.25 only


def test_results_follow_the_schema(smoke_run):
    output_dir, results = smoke_run
    assert json.loads((output_dir / "results.json").read_text()) == results
    assert results["languages"] == ["hi", "en"] and results["fractions"] == [0.25, 1.0]
    for system in ("aligned", "baseline"):
        for fraction in ("0.25", "1.0"):
            for split in ("test", "test_ood"):
                for decoding in ("tdt", "ctc"):
                    scores = results["asr"][system][fraction][split][decoding]
                    assert set(scores["per_language"]) == {"hi", "en"}
                    assert 0 <= scores["overall"]["cer"]
    comparison = results["comparison"]["1.0"]["test"]["tdt"]["hi"]
    assert comparison["ci_low"] <= comparison["difference"] <= comparison["ci_high"]
    assert 0 < comparison["p_value"] <= 1
    assert set(results["align"]["recall_before"]) >= {"recall@1", "recall@5"}
    scratch = results["scratch_comparison"]["0.25"]["test"]["ctc"]["overall"]  # baseline - scratch: does stage 1 help?
    assert set(scratch) >= {"baseline", "scratch", "difference", "ci_low", "ci_high", "p_value"}
    assert set(results["asr"]["scratch"]) == {"0.25"} and "1.0" not in results["scratch_comparison"]
    assert results["asr"]["aligned"]["1.0"]["test"]["tdt"]["overall"]["distinct_hypotheses"] >= 1
    curves = results["learning_curves"]
    assert "masked_accuracy" in curves["pretrain"][-1] and "recall@1" in curves["align"][-1]
    assert "ctc_cer" in curves["asr/scratch-f0.25"][-1]
    assert results["asr_training"]["baseline-f0.25"]["ctc_unfit_utterances"] >= 0
    examples = results["examples"]["1.0"]["test"]["tdt"]
    assert {example["language"] for example in examples} == {"hi", "en"} and {"aligned", "baseline"} <= set(examples[0])
    retrieval = results["align"]["retrieval_examples"]
    assert {example["language"] for example in retrieval} == {"hi", "en"}
    top_k = min(3, results["align"]["recall_after"]["num_images"])
    assert all(example["image_id"].startswith("test-") and len(example["top_images"]) == top_k for example in retrieval)
    assert results["teacher"]["teacher_calls"] == results["teacher"]["unique_images"]


def test_report_has_the_run_summary_tables_and_plots(smoke_run):
    output_dir, _ = smoke_run
    report = (output_dir / "report.md").read_text()
    for heading in ("## Targets", "## Corpus", "## Stage 3 training", "## Wall time per stage",
                    "test_ood · tdt decoding · fine-tuning fraction 0.25", "## Example transcripts"):
        assert heading in report
    assert "Δ CER (baseline − scratch)" in report and "stage 1 helps" in report and "distinct hypotheses" in report
    assert "The paper's direction" in report
    precision = json.loads((output_dir / "results.json").read_text())["precision"]
    assert set(precision) >= {"pretrain", "align", "asr/aligned-f1.0"}
    assert all(entry["requested"] == "auto" and entry["precision"] in ("bf16", "fp32") for entry in precision.values())
    assert f"CPU capability {precision['pretrain']['cpu_capability']}. Precision: " in report
    for plot in ("per_language", "wer_vs_fraction", "learning_curves", "retrieval_examples"):
        assert (output_dir / f"plots/{plot}.png").stat().st_size > 1000 and f"plots/{plot}.png" in report


def test_a_second_run_skips_finished_stages(smoke_run, caplog):
    output_dir, results = smoke_run
    with caplog.at_level("INFO", logger="avalign"):
        again = pipeline.run_pipeline("smoke", output_dir, languages=["hi", "en"])
    assert "[pretrain] finished earlier: skipped" in caplog.text
    assert "[asr/baseline-f1.0] finished earlier: skipped" in caplog.text
    assert again["asr"] == results["asr"] and again["timings_seconds"] == results["timings_seconds"]


def test_each_report_lists_the_shared_stages_and_its_own():
    timings = {"corpus": 1.0, "align": 2.0, "asr/aligned-f1.0": 3.0, "evaluate/f1.0": 4.0, "asr/roman-aligned-f1.0": 5.0,
               "evaluate/roman-f1.0": 6.0, "deromanizer": 7.0, "asr/zeroshot-bn-baseline": 8.0}
    assert list(pipeline.stage_timings(timings, "native")) == ["corpus", "align", "asr/aligned-f1.0", "evaluate/f1.0"]
    assert list(pipeline.stage_timings(timings, "roman")) == [
        "corpus", "align", "asr/roman-aligned-f1.0", "evaluate/roman-f1.0", "deromanizer", "asr/zeroshot-bn-baseline"]


@pytest.mark.parametrize("romanizer_steps", [600, None])
def test_the_zero_shot_romanizer_trains_the_presets_steps_else_the_largest_stage_3s(tmp_path, romanizer_steps):
    demo = dataclasses.replace(pipeline.PRESETS["demo"], zero_shot_romanizer_steps=romanizer_steps)

    class Recorder:  # a Pipeline that records what each stage would train
        output_dir, preset, languages, calls = tmp_path, demo, ["hi", "bn", "ta", "en"], {}

        def stage(self, name, done_marker, run, needs=(), shared=None):
            run()

        def train(self, script, config, **arguments):
            self.calls[arguments["output_dir"].relative_to(tmp_path).as_posix()] = arguments

    recorder = Recorder()
    pipeline.run_zero_shot(recorder, tmp_path / "corpus", {"aligned": tmp_path / "align"}, tmp_path / "cache.json")
    romanizer = recorder.calls["asr/zeroshot-bn-aligned"]
    assert romanizer["languages"] == ["hi", "ta", "en"] and romanizer["targets"] == "roman"
    assert romanizer["max_steps"] == (romanizer_steps or demo.asr_max_steps[1.0])
    assert romanizer["eval_steps"] == romanizer["max_steps"] // 4  # four points on its dev curve
    assert romanizer["ctc_loss_weight"] == 1.0  # the demo reads its romanizers with CTC only


def test_the_scratch_control_runs_in_the_native_run_only():
    demo = pipeline.PRESETS["demo"]
    assert pipeline.systems_at(demo, 0.1) == ("aligned", "baseline", "scratch")
    assert pipeline.systems_at(demo, 0.1, "roman") == ("aligned", "baseline")
    assert pipeline.systems_at(demo, 1.0) == ("aligned", "baseline")


def test_the_roman_stage_list_puts_the_long_chains_first_and_the_deromanizer_last(tmp_path, monkeypatch):
    """--jobs workers claim stages in this order: the text LM and the zero-shot chains first, then stage 3, then the
    de-romanizer (read by the evaluations alone), so that it never waits on the critical chain."""

    class Recorder:  # a Pipeline that records the order of its stages
        output_dir, preset, languages, targets, names = tmp_path, pipeline.PRESETS["demo"], ["hi", "bn", "ta", "en"], \
            "roman", []

        def stage(self, name, done_marker, run, needs=(), shared=None):
            self.names.append(name)

    encoders = {system: tmp_path / system for system in ("aligned", "baseline", "scratch")}
    monkeypatch.setattr(pipeline, "run_encoders", lambda p: (tmp_path / "corpus", encoders, tmp_path / "cache.json"))
    monkeypatch.setattr(pipeline, "run_zero_shot_evaluation", lambda *arguments: None)
    recorder = Recorder()
    pipeline.run_stages(recorder)
    names = recorder.names
    assert names[0] == "text_lm" and names[1:5] == ["asr/zeroshot-bn-aligned", "unified/zeroshot-bn-aligned",
                                                    "asr/zeroshot-bn-baseline", "unified/zeroshot-bn-baseline"]
    assert names.index("deromanizer") == max(i for i, name in enumerate(names) if not name.startswith("evaluate/")) \
        < names.index("evaluate/roman-f0.1")


def test_the_demos_roman_run_trains_two_stages_at_a_time_unless_told(tmp_path, monkeypatch):
    demo = pipeline.PRESETS["demo"]
    assert pipeline.default_jobs(demo, "roman") == 2 and pipeline.default_jobs(demo, "native") == demo.jobs == 1
    assert pipeline.default_jobs(pipeline.PRESETS["smoke"], "roman") == 1
    ran = []

    def record(name):  # each stops the run once it is reached
        def stop(run, *arguments):
            ran.append((name, *arguments))
            raise StopIteration

        return stop

    monkeypatch.setattr(pipeline, "run_encoders", lambda p: ran.append(("encoders",)))
    monkeypatch.setattr(pipeline, "run_side_by_side", record("workers"))
    monkeypatch.setattr(pipeline, "run_stages", record("stages in order"))
    for jobs, expected in ((None, [("encoders",), ("workers", 2)]), (1, [("stages in order",)])):  # --jobs 1: no workers
        ran.clear()
        with pytest.raises(StopIteration):
            pipeline.run_pipeline("demo", tmp_path, targets="roman", jobs=jobs)
        assert ran == expected


@pytest.fixture(scope="module")
def roman_run(smoke_run):
    """The same run directory with --targets roman: stages 0-2 shared, romanized stage 3, zero-shot hi and en; its
    training stages two at a time (--jobs 2)."""
    output_dir, native = smoke_run
    return output_dir, native, pipeline.run_pipeline("smoke", output_dir, languages=["hi", "en"], targets="roman",
                                                     jobs=2)  # fmt: skip


def test_jobs_share_out_each_training_stage_once_and_record_the_wall_time(roman_run):
    output_dir, _, results = roman_run
    trained = {stage for stage in results["timings_seconds"]
               if stage.split("/")[0] in pipeline.SIDE_BY_SIDE or stage.startswith("evaluate/roman-")}  # fmt: skip
    assert {"text_lm", "deromanizer", "unified/zeroshot-hi-aligned", "asr/zeroshot-en-baseline",
            "evaluate/roman-f1.0"} <= trained  # the stage-3 evaluation too, once its models exist
    claims = {claim.name.replace("__", "/"): claim.read_text() for claim in (output_dir / ".claims").iterdir()}
    assert set(claims) == trained and len(set(claims.values())) == 2  # each stage once; both workers ran some
    assert results["run"]["jobs"] == 2 and 0 < results["run"]["seconds"] < sum(results["timings_seconds"].values())
    assert "with 2 training stage(s) at a time" in (output_dir / "report-roman.md").read_text()


def test_roman_targets_run_zero_shot_beside_the_native_report(roman_run):
    output_dir, native, results = roman_run
    assert json.loads((output_dir / "results-roman.json").read_text()) == results
    assert json.loads((output_dir / "results.json").read_text()) == native  # the native report stays
    assert results["targets"] == "roman"
    assert results["timings_seconds"]["pretrain"] == native["timings_seconds"]["pretrain"]  # shared, not rerun
    assert (output_dir / "asr/roman-aligned-f1.0/model.safetensors").is_file() and (output_dir / "deromanizer").is_dir()
    assert set(results["zero_shot"]) == {"hi", "en"}
    views = ("roman", "cascade_char", "cascade_lm", "unified", "cascade_lm_free", "unified_free", "no_speech")
    for language, entry in results["zero_shot"].items():
        for view in views:  # every figure with its interval
            assert set(entry[view]) == {"aligned", "baseline"} and entry[view]["aligned"]["cer"] >= 0
            assert entry[view]["baseline"]["ci_low"] <= entry[view]["baseline"]["cer"] <= entry[view]["baseline"]["ci_high"]
            assert entry[f"{view}_comparison"]["ci_low"] <= entry[f"{view}_comparison"]["ci_high"]
        assert set(entry["unified_vs_cascade"]["aligned"]) == {"cascade_char", "cascade_lm", "no_speech"}
        script = "Devanagari" if language == "hi" else "Latin"  # the LM's outputs held to it, free ones not
        assert all(set(r["hypothesis"].removesuffix("\ufffd")) <= script_characters(script) for view in
                   ("cascade_lm", "unified") for r in read_jsonl(output_dir / f"eval/zeroshot-{language}/predictions-{view}.jsonl"))
        no_speech = read_jsonl(output_dir / f"eval/zeroshot-{language}/predictions-no_speech.jsonl")
        assert {r["hypothesis"] for r in no_speech} <= corpus_sentences(output_dir, language)  # heard nothing
        seen = entry["seen"]["aligned"]  # against the native run's stage-3 model, on the other language
        assert seen["languages"] == [other for other in ("en", "hi") if other != language]
        assert seen["comparison"]["native_stage3"] == seen["native_stage3"]["cer"]
        example = entry["examples"][0]
        assert example["utterance_id"].startswith(f"test-{language}-") and example["reference_roman"].isascii()
        assert {f"{system}_{view}" for system in ("aligned", "baseline") for view in views} <= set(example)
    hindi = results["zero_shot"]["hi"]["examples"][0]
    assert not hindi["reference_unified"].isascii()  # Devanagari, the target of the cascades and the unified model
    assert results["text_lm"]["counts"]["train"] > 0 and (output_dir / "text_lm" / "tokenizer.json").is_file()
    assert results["unified_training"]["zeroshot-hi-aligned"]["speech_languages"] == ["en"]
    assert "unified/zeroshot-hi-aligned" in results["timings_seconds"] and "text_lm" in results["timings_seconds"]
    report = (output_dir / "report-roman.md").read_text()
    assert "## Zero-shot languages" in report and f"| hi | {hindi['utterance_id']} | unified | " in report
    assert "the unified model is" in report and "| unified − stage 3 |" in report
    assert "](plots/per_language-roman.png)" in report and (output_dir / "plots/per_language-roman.png").is_file()


def test_the_zero_shot_evaluation_reads_the_romanizers_with_the_presets_decoding(roman_run):
    output_dir, _, results = roman_run
    decoding = pipeline.PRESETS["smoke"].zero_shot_decoding
    assert results["zero_shot"]["en"]["decoding"] == decoding == "ctc"
    assert f"## Zero-shot languages (roman targets, test set, {decoding.upper()})" in (output_dir / "report-roman.md").read_text()
    model, feature_extractor, tokenizer = evaluate_asr.load_asr_model(output_dir / "asr/zeroshot-en-aligned")
    test = load_splits(str(output_dir / "corpus"), ["test"]).filter(lambda code: code == "en", input_columns="language")
    expected = evaluate_asr.transcribe_dataset(model, feature_extractor, tokenizer, test, decoding)
    written = read_jsonl(output_dir / "eval/zeroshot-en/predictions-roman.jsonl")[: len(expected)]  # aligned's first
    assert [(r["utterance_id"], r["hypothesis"]) for r in written] == [(r["utterance_id"], r["hypothesis"]) for r in expected]


def test_the_text_lm_reads_every_language_in_the_prompt_form_english_as_copies(roman_run):
    output_dir = roman_run[0]
    texts = pipeline.text_lm_texts(output_dir / "corpus", output_dir / "romanization.json", ["hi", "en"])
    english = [text.split("\nRoman: ")[-1] for text in texts if "\nEnglish: " in text]
    copies = [text.split("\nEnglish: ") for text in english]
    assert copies and all(roman == native for roman, native in copies)  # sentences and drills alike
    before = pipeline.text_lm_texts(output_dir / "corpus", output_dir / "romanization.json", ["hi", "en"], latin=False)
    assert not any("\nEnglish: " in text for text in before) and len(texts) == len(before) + len(english)
