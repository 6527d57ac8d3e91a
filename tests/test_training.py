"""The stage scripts and the shared loop: end to end on the smoke corpus, exact resume after SIGKILL, non-finite
losses, corrupt checkpoints, two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForPreTraining

from avalign.modeling import train_tokenizer
from avalign.training import train_align, train_asr, train_pretrain
from avalign.training.data.batching import SpeechCollator
from avalign.training.data.splits import feature_extractor, load_splits
from avalign.training.trainer import AugmentationArguments, NonFiniteLossError, StageArguments, StageTrainer
from avalign.training.trainer import parse_arguments

REPO = Path(__file__).resolve().parents[1]
TINY_ASR = ["--decoder_hidden_size", "32", "--vocab_size", "400", "--max_seconds_per_batch", "20",
            "--warmup_steps", "2", "--logging_steps", "2", "--progress", "false"]  # fmt: skip


def asr_command(corpus, encoder, output_dir, *extra):
    return [sys.executable, str(REPO / "training" / "train_asr.py"), "--corpus", str(corpus), "--init_encoder",
            str(encoder), "--output_dir", str(output_dir), *TINY_ASR, *extra]  # fmt: skip


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, **kwargs)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_config_file_gives_defaults_and_flags_override(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("output_dir: out\nlearning_rate: 0.01\nmax_steps: 7\n")
    (training,) = parse_arguments((StageArguments,), ["--config", str(config), "--max_steps", "9"])
    assert (training.output_dir, training.learning_rate, training.max_steps) == ("out", 0.01, 9)


def test_sigkill_mid_run_then_resume_ends_with_the_same_weights(smoke_corpus, tiny_encoder_dir, tmp_path,
                                                                kill_at_checkpoint):
    # with SpecAugment (masks from the random state the checkpoint restores) and waveform augmentation (drawn per
    # seed, epoch and utterance) on
    steps = ["--max_steps", "10", "--save_steps", "3", "--eval_steps", "5", "--spec_augment_freq_masks", "2",
             "--spec_augment_time_masks", "2", "--speed_perturbation", "0.1", "--reverb_probability", "0.5",
             "--noise_probability", "0.5"]  # fmt: skip
    run(asr_command(smoke_corpus, tiny_encoder_dir, tmp_path / "straight", *steps))

    interrupted = tmp_path / "interrupted"
    kill_at_checkpoint(asr_command(smoke_corpus, tiny_encoder_dir, interrupted, *steps), interrupted, step=3)

    resumed_run = run(asr_command(smoke_corpus, tiny_encoder_dir, interrupted, *steps, "--resume", "true"))
    assert "resumed from" in resumed_run.stderr, resumed_run.stderr[-2000:]
    straight, resumed = load_file(tmp_path / "straight" / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0, msg=name)
    metrics = json.loads((interrupted / "metrics.json").read_text())
    assert metrics["eval_history"] == json.loads((tmp_path / "straight" / "metrics.json").read_text())["eval_history"]
    assert [entry["step"] for entry in metrics["eval_history"]] == [5, 10]  # the dev learning curve, kept on resume
    assert metrics["global_step"] == 10 and metrics["hyperparameters"]["spec_augment_time_masks"] == 2
    assert metrics["hyperparameters"]["noise_probability"] == 0.5
    assert json.loads((interrupted / "config.json").read_text())["encoder_config"]["spec_augment_freq_masks"] == 2


@pytest.mark.parametrize("flags, message", [
    (["--speed_perturbation", "1.0"], "--speed_perturbation must be in"),
    (["--noise_probability", "-0.1"], "--noise_probability must be in"),
    (["--reverb_probability", "2"], "--reverb_probability must be in"),
    (["--freeze_encoder_steps", "-1"], "--freeze_encoder_steps must be >= 0"),
])  # fmt: skip
def test_bad_augmentation_and_warm_up_settings_fail_before_training(flags, message):
    with pytest.raises(ValueError, match=message):
        parse_arguments((AugmentationArguments, StageArguments), ["--output_dir", "unused", *flags])


def test_kmeans_targets_need_utterances_to_fit_on():
    with pytest.raises(ValueError, match="--kmeans_utterances must be >= 1"):
        train_pretrain.PretrainArguments(corpus="c", quantizer="kmeans", kmeans_utterances=0)


def make_trainer(corpus, encoder_dir, output_dir, compute_loss=None, **arguments):
    args = train_pretrain.PretrainArguments(corpus=str(corpus), init_encoder=str(encoder_dir), codebook_size=32)
    training = StageArguments(output_dir=str(output_dir), max_seconds_per_batch=20, warmup_steps=1, progress=False,
                              logging_steps=1, **arguments)  # fmt: skip
    dataset = load_splits(str(corpus), ["unlabeled"])
    return StageTrainer(training, train_pretrain.build_model(args), dataset, SpeechCollator(feature_extractor()),
                        compute_loss or train_pretrain.masked_prediction_loss)  # fmt: skip


def test_pretraining_with_kmeans_targets_fits_the_codebook_first(smoke_corpus, tiny_encoder_dir, tmp_path):
    train_pretrain.main(["--corpus", str(smoke_corpus), "--init_encoder", str(tiny_encoder_dir), "--output_dir",
                         str(tmp_path), "--quantizer", "kmeans", "--codebook_size", "8", "--max_steps", "2",
                         "--warmup_steps", "1", "--max_seconds_per_batch", "20", "--save_steps", "0",
                         "--progress", "false"])  # fmt: skip
    model = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert model.config.quantizer == "kmeans" and model.config.codebook_size == 8
    unfitted = model.quantizer.compute_parameters()  # the seeded noise a k-means quantizer starts from
    assert not torch.allclose(model.quantizer.codebooks, unfitted)
    frames = model.quantizer.codebooks[0]  # centroids of normalised log-mels: well inside the feature range
    assert frames.abs().max() < 10 and len(torch.unique(frames, dim=0)) == 8


def test_nonfinite_losses_are_skipped_and_counted(smoke_corpus, tiny_encoder_dir, tmp_path):
    calls = {"n": 0}

    def sometimes_nan(model, batch):
        loss, logs = train_pretrain.masked_prediction_loss(model, batch)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] % 2 else loss), logs

    trainer = make_trainer(smoke_corpus, tiny_encoder_dir, tmp_path, sometimes_nan, max_steps=3, save_steps=0)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train()
    assert result.global_step == 3 and result.skipped_nonfinite == 3
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_head_warm_up_leaves_the_encoder_alone_for_its_steps(smoke_corpus, tiny_encoder_dir, tmp_path):
    seen = []  # (encoder weight, head weight) as each step's loss sees them: after that many updates

    def loss_seeing_weights(model, batch):
        encoder_weight, head_weight = model.encoder.layers[0].self_attn.q_proj.weight, model.decoder.weight
        seen.append((encoder_weight.detach().clone(), head_weight.detach().clone()))
        return train_pretrain.masked_prediction_loss(model, batch)

    trainer = make_trainer(smoke_corpus, tiny_encoder_dir, tmp_path, loss_seeing_weights, max_steps=4, save_steps=0,
                           freeze_encoder_steps=2)  # fmt: skip
    trainer.train()
    assert torch.equal(seen[0][0], seen[2][0])  # two updates with the encoder frozen
    assert not torch.equal(seen[1][1], seen[2][1])  # while the head trains (the first update is warm-up: lr 0)
    assert not torch.equal(seen[2][0], seen[3][0])  # then the encoder trains too


def test_head_warm_up_skips_the_encoders_backward_with_the_same_result(smoke_corpus, tiny_encoder_dir, tmp_path):
    needs_gradient = []  # does the encoder take part in each step's backward?

    def loss_noting_the_encoder(model, batch):
        needs_gradient.append(model.encoder.layers[0].self_attn.q_proj.weight.requires_grad)
        return train_pretrain.masked_prediction_loss(model, batch)

    models = []
    for skip in (True, False):  # skipped in one process; the distributed path drops the computed gradients instead
        trainer = make_trainer(smoke_corpus, tiny_encoder_dir, tmp_path / str(skip), loss_noting_the_encoder,
                               max_steps=4, save_steps=0, freeze_encoder_steps=2)  # fmt: skip
        if not skip:
            trainer.warm_up_weights = []
        trainer.train()
        models.append(list(trainer.model.parameters()))
    assert needs_gradient[:4] == [False, False, True, True] and all(needs_gradient[4:])
    assert all(torch.equal(a, b) for a, b in zip(*models))


def test_a_run_that_keeps_producing_nonfinite_losses_stops_with_a_clear_message(smoke_corpus, tiny_encoder_dir, tmp_path):
    def always_nan(model, batch):
        loss, logs = train_pretrain.masked_prediction_loss(model, batch)
        return loss * float("inf"), logs

    trainer = make_trainer(smoke_corpus, tiny_encoder_dir, tmp_path, always_nan, max_steps=5,
                           max_consecutive_nonfinite=3)  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite losses"):
        trainer.train()


def test_corrupt_checkpoint_is_reported_and_resume_falls_back(smoke_corpus, tiny_encoder_dir, tmp_path, caplog):
    trainer = make_trainer(smoke_corpus, tiny_encoder_dir, tmp_path, max_steps=4, save_steps=2)
    trainer.train()
    latest = tmp_path / "checkpoints" / "step-00000004"
    (latest / "model.safetensors").write_bytes(b"not a safetensors file")
    again = make_trainer(smoke_corpus, tiny_encoder_dir, tmp_path, max_steps=4, save_steps=2, resume=True)
    with caplog.at_level("WARNING", logger="avalign"):
        again._resume()
    assert "step-00000004 is unreadable" in caplog.text
    assert again.state["global_step"] == 2


def test_lora_fine_tuning_trains_adapters_and_saves_a_plain_model(smoke_corpus, tiny_encoder_dir, tmp_path):
    run(asr_command(smoke_corpus, tiny_encoder_dir, tmp_path, "--max_steps", "2", "--save_steps", "0",
                    "--lora_rank", "4", "--train_fraction", "0.25"))  # fmt: skip
    weights = load_file(tmp_path / "model.safetensors")
    assert not any("lora" in name for name in weights)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_utterances"] < len(load_splits(str(smoke_corpus), ["train"]))
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "preprocessor_config.json").is_file()


def test_two_processes_with_accelerate_launch(smoke_corpus, tiny_encoder_dir, tmp_path):
    # without a GPU, accelerate's multi-process launcher starts CPU processes that talk through gloo
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               str(REPO / "training" / "train_pretrain.py"), "--corpus", str(smoke_corpus), "--init_encoder",
               str(tiny_encoder_dir), "--output_dir", str(tmp_path), "--codebook_size", "32", "--max_steps", "3",
               "--save_steps", "2", "--max_seconds_per_batch", "20", "--warmup_steps", "1", "--progress", "false"]  # fmt: skip
    run(command, env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 3 and metrics["num_processes"] == 2
    assert (tmp_path / "checkpoints" / "step-00000002" / "trainer_state.json").is_file()


def test_roman_targets_train_on_romanized_transcripts(smoke_corpus, tiny_encoder_dir, tmp_path):
    cache = tmp_path / "romanization.json"
    run(asr_command(smoke_corpus, tiny_encoder_dir, tmp_path / "model", "--max_steps", "2", "--save_steps", "0",
                    "--targets", "roman", "--romanization_cache", str(cache), "--languages", "hi",
                    "--roman_vocab_size", "280"))  # fmt: skip
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["targets"] == "roman"
    vocabulary = json.loads((tmp_path / "model" / "tokenizer.json").read_text())["model"]["vocab"]
    romanized = [roman for texts in json.loads(cache.read_text()).values() for roman in texts.values()]
    assert len(vocabulary) <= 280 < len(train_tokenizer(romanized, vocab_size=400, shrink_to_fit=True))  # not 400
    learned = [token for token in vocabulary if not token.startswith("<")]
    assert learned and all(ch.isascii() for token in learned for ch in token.replace("▁", "")), learned[:20]
    assert json.loads(cache.read_text()), "the romanized transcripts are cached for the next run"


def test_embedding_spread_is_zero_for_a_collapsed_embedding_and_near_one_for_spread_vectors():
    same = torch.nn.functional.normalize(torch.ones(10, 8), dim=-1)
    assert train_align.spread(same) == pytest.approx(0.0, abs=1e-6)
    basis = torch.eye(8)  # eight orthogonal unit vectors: total variance 1 - 1/8
    assert train_align.spread(basis) == pytest.approx((1 - 1 / 8) ** 0.5, rel=1e-5)
