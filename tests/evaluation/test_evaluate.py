"""Evaluation: normalisation, WER / CER, paired bootstrap, transcription of a corpus, the report and the CLI."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import jiwer
import numpy as np
import pytest
import torch
from datasets import load_from_disk
from transformers import ParakeetFeatureExtractor

from avalign.modeling import FastConformerConfig, FastConformerCTCTDTConfig, FastConformerForCTCTDT, train_tokenizer
from avalign.training import evaluate_asr
from avalign.training.data.batching import SkipReport
from avalign.training.data.splits import load_splits
from avalign.training.evaluation import asr_error_rates, report
from avalign.training.evaluation.metrics import asr_metric, compare, normalize_transcript, paired_bootstrap, resample_counts, score

LANGUAGES = ["hi", "en"]  # of the session's smoke corpus (tests/conftest.py)
SYSTEMS = ("aligned", "baseline")


# ------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models decode fastest on one thread (the step-by-step TDT loop pays for thread sync on every call)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def saved_models(smoke_corpus, tmp_path_factory):
    """{name: (model, folder)}: two untrained tiny CTC + TDT models (different seeds), each saved to its folder with
    a tokenizer and a feature extractor."""
    tokenizer = train_tokenizer(load_from_disk(str(smoke_corpus))["train"]["transcript"], vocab_size=300)
    encoder = FastConformerConfig.from_preset("tiny").to_dict()
    saved = {}
    for seed, name in enumerate(SYSTEMS):
        torch.manual_seed(seed)
        config = FastConformerCTCTDTConfig(
            encoder_config=encoder, vocab_size=len(tokenizer), decoder_hidden_size=24, max_symbols_per_step=2
        )  # untrained TDT emits max_symbols_per_step labels per frame: keep decoding short
        model, folder = FastConformerForCTCTDT(config).eval(), tmp_path_factory.mktemp(name)
        for part in (model, tokenizer, ParakeetFeatureExtractor()):
            part.save_pretrained(folder)
        saved[name] = model, folder
    return saved


@pytest.fixture(scope="session")
def model_dirs(saved_models):
    return {name: folder for name, (_, folder) in saved_models.items()}


@pytest.fixture(scope="session")
def cli_run(smoke_corpus, model_dirs, tmp_path_factory):
    """(output folder, results) of the CLI on both models, both test splits and both decodings."""
    output_dir = tmp_path_factory.mktemp("eval")
    argv = [
        "--model", str(model_dirs["aligned"]), "--model", str(model_dirs["baseline"]),
        "--name", "aligned", "--name", "baseline", "--corpus", str(smoke_corpus), "--splits", "test", "test_ood",
        "--decoding", "tdt", "ctc", "--num-resamples", "200", "--output-dir", str(output_dir),
    ]  # fmt: skip
    evaluate_asr.main(argv)
    return output_dir, json.loads((output_dir / "results.json").read_text(encoding="utf-8"))


def records(references, hypotheses, language="xx", prefix="u"):
    return [
        {"utterance_id": f"{prefix}{index}", "language": language, "reference": reference, "hypothesis": hypothesis}
        for index, (reference, hypothesis) in enumerate(zip(references, hypotheses))
    ]


# --------------------------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello,  World!", "hello world"),
        ("ÉCOLE\u0301", "écolé"),  # decomposed accent composed by NFC, then lowercased
        ("वाक्य।दूसरा वाक्य॥", "वाक्य दूसरा वाक्य"),  # danda and double danda split and vanish
        ("\u0958 \u0915\u093c", "\u0915\u093c \u0915\u093c"),  # qa: composition-excluded, NFC keeps ka + nukta
        ("தமிழ் மொழி.", "தமிழ் மொழி"),  # the Tamil virama (a combining mark) stays
        ("আমি, তুমি।", "আমি তুমি"),
        ("کیا؟  ہاں", "کیا ہاں"),  # Arabic question mark
        ("क्\u200dष", "क्\u200dष"),  # the zero-width joiner is spelling, not whitespace
        ("₹5 + 3", "₹5 + 3"),  # symbols and digits are kept
        ("  \t\n ", ""),
    ],
)
def test_normalisation_per_script(text, expected):
    assert normalize_transcript(text) == expected


# ------------------------------------------------------------------------------------------------------ WER / CER
def test_score_matches_hand_computed_corpus_level_rates():
    # "a b c" -> "a x c d": 1 substitution + 1 insertion of 3 words; characters: b->x, +" d" = 3 of 5
    # "d e"   -> "d":       1 deletion of 2 words;                    characters: -" e" = 2 of 3
    english = records(["a b c"], ["a x c d"], "en", "en")
    hindi = records(["d e"], ["d"], "hi", "hi")
    scores = score(english + hindi)
    one = {"num_utterances": 1, "distinct_hypotheses": 1, "distinct_references": 1}
    assert scores["overall"] == {"wer": 3 / 5, "cer": 5 / 8, "num_utterances": 2, "distinct_hypotheses": 2,
                                 "distinct_references": 2}  # fmt: skip
    assert scores["per_language"] == {
        "en": {"wer": 2 / 3, "cer": 3 / 5, **one}, "hi": {"wer": 1 / 2, "cer": 2 / 3, **one}
    }
    assert scores["overall"]["wer"] == pytest.approx(jiwer.wer(["a b c", "d e"], ["a x c d", "d"]))
    assert scores["overall"]["cer"] == pytest.approx(jiwer.cer(["a b c", "d e"], ["a x c d", "d"]))


def test_score_counts_distinct_hypotheses_after_normalisation():
    fixed = score(records(["a b", "c d", "e f"], ["x", "X.", "x"]))["overall"]  # one string for every clip
    assert (fixed["distinct_hypotheses"], fixed["distinct_references"]) == (1, 3)
    varied = score(records(["a b", "a b", "e f"], ["a b", "a c", "e"]))["overall"]
    assert (varied["distinct_hypotheses"], varied["distinct_references"]) == (3, 2)


def test_score_normalises_both_sides_and_counts_empty_references_as_insertions():
    assert score(records(["यह घर है।"], ["यह  घर, है"]))["overall"]["wer"] == 0.0
    assert score(records(["Hello World"], ["hello world!"]))["overall"]["cer"] == 0.0
    assert score(records(["", "a"], ["b c", "a"]))["overall"]["wer"] == 2.0  # 2 insertions over 1 reference word
    with pytest.raises(ValueError, match="every reference is empty"):
        score(records(["", "."], ["a", "b"]))


def test_metric_module_loads_offline_by_path_and_agrees_with_score(tmp_path):
    """The `evaluate` module alone (a fresh process, Hub offline, an empty cache): the same figures as `score`."""
    references, hypotheses, languages = ["a b c", "d e", "यह घर है।"], ["a x c d", "d", "यह  घर, है"], ["en", "hi", "hi"]
    script = textwrap.dedent(f"""
        import json, evaluate
        metric = evaluate.load({asr_error_rates.__file__!r})
        print(json.dumps(metric.compute(predictions={hypotheses!r}, references={references!r}, languages={languages!r})))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    computed = json.loads(result.stdout.strip().splitlines()[-1])
    expected = score([record for reference, hypothesis, language in zip(references, hypotheses, languages)
                      for record in records([reference], [hypothesis], language, language)])  # fmt: skip
    assert computed["wer"] == expected["overall"]["wer"] == 3 / 8 and computed["num_utterances"] == 3
    assert computed["cer"] == expected["overall"]["cer"]
    for language, rates in computed["per_language"].items():
        assert {key: rates[key] for key in ("wer", "cer")} == {key: expected["per_language"][language][key]
                                                              for key in ("wer", "cer")}  # fmt: skip
    with pytest.raises(ValueError, match="one entry per utterance"):
        asr_metric().compute(predictions=["a"], references=["a"], languages=["en", "hi"])


# ------------------------------------------------------------------------------------------------------ bootstrap
def test_resample_counts_draw_each_resample_of_full_size():
    counts = resample_counts(7, 50, seed=0)
    assert counts.shape == (50, 7) and (counts.sum(1) == 7).all() and (counts >= 0).all()
    assert not (counts == 1).all()  # with replacement


def test_bootstrap_of_identical_systems_is_zero_with_p_one():
    texts = ["a b c", "d e f g", "h i"]
    system = records(texts, ["a b x", "d e", "h i j"])
    result = paired_bootstrap(system, copy.deepcopy(system[::-1]), "wer", num_resamples=300)
    assert result["difference"] == result["ci_low"] == result["ci_high"] == 0.0
    assert result["p_value"] == 1.0


def test_bootstrap_finds_a_clearly_better_system():
    rng = np.random.default_rng(0)
    references = [" ".join(rng.choice(list("abcdefgh"), size=6)) for _ in range(40)]
    worse = [" ".join(reference.split()[:-2]) for reference in references]  # two deletions everywhere
    result = paired_bootstrap(records(references, references), records(references, worse), "wer", 1000, seed=1)
    assert result["difference"] == pytest.approx(-2 / 6)
    assert result["ci_low"] <= result["difference"] <= result["ci_high"] < 0
    assert result["p_value"] < 0.01 and type(result["p_value"]) is float  # JSON-ready
    assert paired_bootstrap(records(references, references), records(references, worse), "wer", 1000, seed=1) == result


def test_bootstrap_interval_reflects_noise():
    rng = np.random.default_rng(3)
    references = [" ".join(rng.choice(list("abcdefgh"), size=5)) for _ in range(60)]

    def noisy(reference):  # drop one word with probability 1/2
        return " ".join(reference.split()[1:]) if rng.random() < 0.5 else reference

    a, b = records(references, [noisy(r) for r in references]), records(references, [noisy(r) for r in references])
    result = paired_bootstrap(a, b, "cer", 500)
    assert result["difference"] == pytest.approx(score(a)["overall"]["cer"] - score(b)["overall"]["cer"])
    assert result["ci_low"] < result["difference"] < result["ci_high"]
    assert 0 < result["p_value"] <= 1


def test_bootstrap_refuses_mismatched_utterances():
    a = records(["a b", "c d"], ["a b", "c"])
    with pytest.raises(ValueError, match="different utterances.*1 only in a"):
        paired_bootstrap(a, a[:1])
    changed = copy.deepcopy(a)
    changed[1]["reference"] = "c e"
    with pytest.raises(ValueError, match="u1: the systems have different references"):
        paired_bootstrap(a, changed)
    with pytest.raises(ValueError, match="unique"):
        paired_bootstrap(a + a[:1], a)


def test_compare_gives_each_language_and_overall():
    a = records(["a b", "c d"], ["a b", "c"], "hi") + records(["e f"], ["e f"], "en", "e")
    b = records(["a b", "c d"], ["a", "c"], "hi") + records(["e f"], ["x f"], "en", "e")
    comparison = compare({"aligned": a, "baseline": b}, metric="wer", num_resamples=100)
    assert list(comparison) == ["en", "hi", "overall"]
    overall = comparison["overall"]
    assert (overall["aligned"], overall["baseline"]) == (1 / 6, 3 / 6)
    assert overall["difference"] == pytest.approx(-2 / 6) and overall["metric"] == "wer"
    assert comparison["en"]["difference"] == pytest.approx(-1 / 2)


# ------------------------------------------------------------------------------------------ transcription of a corpus
@pytest.mark.parametrize("decoding", ["tdt", "ctc"])
def test_transcribe_dataset_returns_one_record_per_row(smoke_corpus, saved_models, decoding):
    original, folder = saved_models["baseline"]
    model, feature_extractor, tokenizer = evaluate_asr.load_asr_model(folder)
    dataset = load_splits(str(smoke_corpus), ["test"])
    predictions = evaluate_asr.transcribe_dataset(
        model, feature_extractor, tokenizer, dataset, decoding, max_seconds_per_batch=8.0
    )
    assert [p["utterance_id"] for p in predictions] == dataset["utterance_id"]
    assert [p["reference"] for p in predictions] == dataset["transcript"]
    assert [p["language"] for p in predictions] == dataset["language"]
    # the model loaded from its folder decodes as the model that was saved did
    saved = evaluate_asr.transcribe_dataset(original, feature_extractor, tokenizer, dataset, decoding)
    assert [p["hypothesis"] for p in predictions] == [p["hypothesis"] for p in saved]


def replace_value(dataset, index, column, value):
    """`dataset` with `column` of row `index` set to `value`."""
    return dataset.map(lambda row, i: {column: value if i == index else row[column]}, with_indices=True)


def test_transcribe_dataset_counts_rows_with_bad_audio(smoke_corpus, model_dirs):
    model, feature_extractor, tokenizer = evaluate_asr.load_asr_model(model_dirs["aligned"])
    dataset = load_splits(str(smoke_corpus), ["test"])
    ids = dataset["utterance_id"]
    broken = replace_value(dataset, 1, "audio", {"bytes": b"not a sound file", "path": f"{ids[1]}.flac"})
    skip_report = SkipReport()
    predictions = evaluate_asr.transcribe_dataset(
        model, feature_extractor, tokenizer, broken, "ctc", skip_report=skip_report
    )
    assert [p["utterance_id"] for p in predictions] == ids[:1] + ids[2:]
    assert dict(skip_report.counts) == {"unreadable": 1}
    assert skip_report.examples["unreadable"] == [ids[1]]


def test_repeated_utterance_ids_are_refused(smoke_corpus):
    dataset = load_splits(str(smoke_corpus), ["test"])
    repeated = replace_value(dataset, 2, "utterance_id", dataset[0]["utterance_id"])
    with pytest.raises(ValueError, match=f"{dataset[0]['utterance_id']}.*repeated"):
        evaluate_asr.check_evaluation_set(repeated)


# ------------------------------------------------------------------------------------------------- CLI and report
def test_cli_scores_both_systems_and_compares_them(cli_run):
    output_dir, results = cli_run
    assert set(results) == {"asr", "comparison", "examples"}
    examples = results["examples"]["1.0"]["test"]["ctc"]  # the first utterances of each language, as written
    assert sorted(example["language"] for example in examples) == sorted(LANGUAGES * 2)
    for name in SYSTEMS:
        lines = (output_dir / f"predictions-{name}-test-ctc.jsonl").read_text().splitlines()
        written = {record["utterance_id"]: record["hypothesis"] for record in map(json.loads, lines)}
        assert all(example[name] == written[example["utterance_id"]] for example in examples)
    for name in SYSTEMS:
        for split in ("test", "test_ood"):
            for decoding in ("tdt", "ctc"):
                scores = results["asr"][name]["1.0"][split][decoding]
                assert scores["overall"]["num_utterances"] == 6 and set(scores["per_language"]) == set(LANGUAGES)
                assert scores["skipped"] == {}
                lines = (output_dir / f"predictions-{name}-{split}-{decoding}.jsonl").read_text().splitlines()
                predictions = [json.loads(line) for line in lines]
                assert len(predictions) == 6
                assert score(predictions)["overall"] == scores["overall"]
    for split in ("test", "test_ood"):
        for decoding in ("tdt", "ctc"):
            comparison = results["comparison"]["1.0"][split][decoding]
            assert set(comparison) == {*LANGUAGES, "overall"}
            for group, entry in comparison.items():
                rates = [results["asr"][name]["1.0"][split][decoding] for name in SYSTEMS]
                rates = [r["overall"] if group == "overall" else r["per_language"][group] for r in rates]
                assert entry["metric"] == "cer"
                assert (entry["aligned"], entry["baseline"]) == (rates[0]["cer"], rates[1]["cer"])
                assert entry["difference"] == pytest.approx(entry["aligned"] - entry["baseline"])
                assert entry["ci_low"] <= entry["ci_high"] and 0 < entry["p_value"] <= 1


def test_cli_writes_report_and_plots(cli_run):
    output_dir, _ = cli_run
    text = (output_dir / "report.md").read_text(encoding="utf-8")
    assert text.count("### ") == 4 and "Δ CER (aligned − baseline)" in text and "| **overall** |" in text
    for name in ("per_language.png", "wer_vs_fraction.png"):
        assert (output_dir / "plots" / name).stat().st_size > 1000


def with_fractions(results):
    """The one-fraction CLI results copied to fractions 0.1 and 0.25, every rate scaled up."""
    results = copy.deepcopy(results)
    for runs in results["asr"].values():
        for key, factor in (("0.1", 1.5), ("0.25", 1.2)):
            runs[key] = copy.deepcopy(runs["1.0"])
            for decodings in runs[key].values():
                for scores in decodings.values():
                    for group in [scores["overall"], *scores["per_language"].values()]:
                        group["wer"], group["cer"] = factor * group["wer"], factor * group["cer"]
    return results


def test_report_covers_every_fraction_and_a_single_system(cli_run, tmp_path):
    results = with_fractions(cli_run[1])
    text = report.markdown_tables(results)
    assert text.count("### ") == 3 * 4
    assert text.index("fraction 0.1\n") < text.index("fraction 0.25\n") < text.index("fraction 1.0\n")
    assert text.count("Δ CER") == 4  # only fraction 1.0 has a comparison
    report.plot_wer_vs_fraction(results, tmp_path / "fraction.png", decoding="ctc")
    assert (tmp_path / "fraction.png").stat().st_size > 1000

    single = {"asr": {"baseline": results["asr"]["baseline"]}}
    paths = report.write_report(single, tmp_path / "single")
    assert all(path.stat().st_size > 0 for path in paths)
    assert "Δ" not in report.markdown_tables(single).split("\n\n", 1)[1]
