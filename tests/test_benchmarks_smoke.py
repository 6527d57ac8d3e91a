"""Smoke tests of the benchmark scripts' helpers at tiny sizes: correctness only, never timings."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_encoder  # noqa: E402
import bench_greedy_decoding  # noqa: E402
import run as bench_run  # noqa: E402

VOCAB, DECODER_WIDTH = 33, 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny ops on a busy 2-core machine: a second thread only adds synchronisation waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def decoding_setup():
    """A tiny calibrated CTC+TDT model, its stock export, a batch and its encoder outputs."""
    model = bench_greedy_decoding.build_model("tiny", VOCAB, DECODER_WIDTH)
    features, mask, _ = bench_encoder.padded_features(4, 1.0, 2.0, seed=1)
    with torch.no_grad():
        outputs = model(features, attention_mask=mask)
    emissions = bench_greedy_decoding.calibrate_emissions(model, outputs.encoder_states, outputs.encoder_lengths)
    return model, model.to_parakeet_tdt(), features, mask, outputs, emissions


def test_padded_features_masks_and_lengths():
    features, mask, lengths = bench_encoder.padded_features(5, 0.5, 1.5, seed=3)
    assert features.shape == (5, int(lengths.max()), 80) and mask.shape == features.shape[:2]
    assert mask.sum(-1).tolist() == lengths.tolist()
    assert features[mask == 0].abs().sum() == 0 and features[mask == 1].abs().sum() > 0
    seconds = lengths * bench_encoder.SECONDS_PER_FEATURE_FRAME
    assert seconds.min() >= 0.5 - 0.01 and seconds.max() <= 1.5


def test_encoders_share_weights_and_both_train():
    ours, peer = bench_encoder.build_encoders("tiny")
    features, mask, _ = bench_encoder.padded_features(3, 0.5, 1.0)
    assert bench_encoder.max_output_difference(ours, peer, features, mask) < 1e-5
    for encoder in (ours, peer):
        encoder.train()
        bench_encoder.training_step(encoder, features, mask)
        assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


def test_goal_rows_compare_wall_and_cpu_time():
    times = {"avalign": {"wall_s": 0.5, "cpu_s": 1.0}, "peer": {"wall_s": 2.0, "cpu_s": 3.0}}
    row = bench_encoder.goal("decode", times, target=5.0)
    assert row["ratio"] == times["peer"]["wall_s"] / times["avalign"]["wall_s"] and row["met"] is False
    throughput = bench_encoder.goal("encode", times, target=1.0, work=10.0, unit="audio-s/s")
    assert throughput["avalign"] == 10.0 / 0.5 and throughput["ratio"] == row["ratio"] and throughput["met"]
    assert bench_encoder.goal("e2e", times)["met"] is None


def test_calibrated_emissions_and_identical_decoding(decoding_setup):
    model, tdt, features, mask, outputs, emissions = decoding_setup
    lengths = outputs.encoder_lengths
    assert emissions["label_duration_counts"][0] == 0 and sum(emissions["label_duration_counts"]) > 0
    assert emissions["frames_per_label"] == bench_greedy_decoding.frames_per_label(model, outputs.encoder_states, lengths)
    encoder_outputs = tdt.get_audio_features(input_features=features, attention_mask=mask, output_attention_mask=True)
    for precomputed in (encoder_outputs, None):
        check = bench_greedy_decoding.compare_outputs(model, tdt, features, mask, outputs.encoder_states, lengths,
                                                      precomputed)
        assert check["identical_tokens"] and check["identical_timestamps"]
        joint = check["joint_evaluations_per_utterance"]
        assert joint["avalign"] == joint["peer"] >= check["labels_per_utterance"] > 0
    assert "get_audio_features" not in vars(tdt)  # the encoder bypass is undone


def test_max_symbols_check_shows_both_behaviours(decoding_setup):
    model, _, features, mask, _, _ = decoding_setup
    check = bench_greedy_decoding.max_symbols_check(model, features[:2, :80], mask[:2, :80])
    cap = model.config.max_symbols_per_step
    assert check["avalign"]["labels"] == [frames * cap for frames in check["encoder_frames"]]
    assert check["avalign"]["last_frame"] == [frames - 1 for frames in check["encoder_frames"]]
    assert check["avalign"]["max_labels_on_one_frame"] == cap
    assert check["peer"]["last_frame"] == [0, 0] and check["peer"]["max_labels_on_one_frame"] > cap


def test_goal_rows_of_measure_style_results_carry_the_scripts_own_targets():
    measured = {"times": {"fused": {"wall_s": 0.1, "cpu_s": 0.2}, "unfused": {"wall_s": 1.0, "cpu_s": 2.0},
                          "transformers": {"wall_s": 2.0, "cpu_s": 4.0}},
                "extra_peak_bytes": {"fused": 2**20, "unfused": 8 * 2**20, "transformers": 16 * 2**20}}
    measured.update(speedup=2.0 / 0.1, memory_ratio=1 / 8, meets_targets={"speedup": True, "memory_ratio": True})
    rows = bench_run.goal_rows({"results": measured, "targets": {"speedup": 8.0, "memory_ratio": 0.25}})
    assert [row["goal"].split(", ")[1] for row in rows] == ["fused vs unfused"] * 2 + ["fused vs transformers"] * 2
    assert [row["ratio"] for row in rows] == pytest.approx([10.0, 8.0, 20.0, 16.0])
    assert [row["target"] is not None for row in rows] == [False, True, True, False]  # the ratios the script reports
    assert rows[1]["met"] is True and rows[0]["met"] is None


def test_report_lists_goals_skips_machine_and_pipeline_times(tmp_path):
    times = {"avalign": {"wall_s": 1.0, "cpu_s": 2.0}, "peer": {"wall_s": 1.5, "cpu_s": 2.5}}
    ours = {"name": "encoder", "checks": {}, "settings": {}, "goals": [bench_encoder.goal("encode", times, 1.0)]}
    pipeline = tmp_path / "results.json"
    pipeline.write_text(json.dumps({"preset": "demo", "timings_seconds": {"corpus": 12.5, "pretrain": 30.0}}))
    records = {("bench_encoder", "cpu"): {"results": ours},
               ("bench_fused_joint", "cpu"): bench_run.run_benchmark("bench_no_such_script", "cpu", quick=True, threads=1)}
    report = tmp_path / "RESULTS.md"
    bench_run.write_report(report, bench_run.machine_rows(["cpu"], threads=2), records, pipeline, quick=True)
    text = report.read_text()
    assert bench_run.cpu_model() in text and torch.__version__ in text and "set_num_threads(2)" in text
    assert "| bench_encoder | cpu | encode | 1 | 1.5 | s | 1.5 | 1.25 | >= 1x | yes |" in text
    assert "bench_no_such_script.py does not exist" in text
    assert "| pretrain | 30.0 |" in text and "| total | 42.5 |" in text


def test_precision_goals_compare_auto_with_fp32_and_bf16():
    import bench_precision

    times = {"fp32": {"wall_s": 1.0, "cpu_s": 2.0}, "bf16": {"wall_s": 60.0, "cpu_s": 120.0},
             "auto": {"wall_s": 1.02, "cpu_s": 2.0}}  # fmt: skip
    record = {"step_seconds": {"stage 1": times}, "auto": {"precision": "fp32"}, "cpu_capability": "AVX2"}
    rows = bench_precision.goals("avx2", record)
    assert [row["met"] for row in rows] == [True, True] and "auto (fp32) vs bf16" in rows[1]["goal"]
    slow = {**times, "auto": {"wall_s": 2.0, "cpu_s": 4.0}}  # auto at 2x fp32 misses the 1.3x goal
    assert not bench_precision.goals("avx2", {**record, "step_seconds": {"stage 1": slow}})[0]["met"]
    same = {**times, "auto": times["fp32"]}  # auto's step timed once, as the precision it chose
    rows = bench_precision.goals("avx2", {**record, "step_seconds": {"stage 1": same}})
    assert rows[0]["ratio"] == 1.0 and "vs fp32 (the same step)" in rows[0]["goal"]
    assert "(the same step)" not in rows[1]["goal"]


def test_asr_pipeline_benchmark_folders_give_the_stock_pipelines_texts(tmp_path):
    """avalign's pipeline on a calibrated stage-3 folder writes, in padded batches, what the stock pipeline writes on
    its export one clip at a time."""
    import bench_asr_pipeline
    from transformers import pipeline

    clips = bench_asr_pipeline.noise_clips(3, 1.0, 2.0)
    ours_folder, stock_folder = bench_asr_pipeline.make_folders(str(tmp_path), "tiny", 16, clips)
    ours = pipeline(bench_asr_pipeline.TASK, model=ours_folder, trust_remote_code=True)
    stock = pipeline(bench_asr_pipeline.TASK, model=stock_folder)
    texts = [output["text"] for output in ours(clips, batch_size=2)]
    assert texts == [output["text"] for output in stock(clips, batch_size=1)]
    assert sum(map(len, texts)) > 0  # the calibrated joint emits labels


def test_times_across_processes_runs_fresh_interpreters_and_takes_medians(tmp_path):
    """Each process's line is kept per contender (here, each process reports its own pid), and median_times takes
    the median over processes of each figure."""
    import _measure

    script = tmp_path / "contenders.py"
    script.write_text(
        "import json, os, sys\n"
        "names = sys.argv[sys.argv.index('--interleave') + 1 : sys.argv.index('--repeats')]\n"
        "assert sys.argv[-1] == '--quick'\n"
        "print('noise before the line')\n"
        "print(json.dumps({n: {'wall_s': float(os.getpid()), 'cpu_s': 2.0} for n in names}))\n"
    )
    times = _measure.times_across_processes(script, ["a", "b"], processes=3, repeats=1, threads=1,
                                            arguments=["--quick"])
    assert sorted(times) == ["a", "b"] and len(times["a"]) == 3
    pids = [t["wall_s"] for t in times["a"]]
    assert len(set(pids)) == 3 and [t["wall_s"] for t in times["b"]] == pids
    assert _measure.median_times(times["a"]) == {"wall_s": sorted(pids)[1], "cpu_s": 2.0}
