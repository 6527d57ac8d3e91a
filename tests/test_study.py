"""The alignment study's instrument: stage-2 options (joint loss, alignment layer, frozen depth, within-language
negatives, shuffled images), their errors before training, the hierarchical bootstrap, and the study's skip and
resume on the smoke corpus. No test asserts a study figure."""

import json

import pytest
import torch

from avalign.modeling import (
    FastConformerAlignmentConfig,
    FastConformerConfig,
    FastConformerForImageAlignment,
    FastConformerForMaskedTokenPrediction,
    FastConformerMaskedTokenPredictionConfig,
)
from avalign.modeling.modeling_fastconformer import alignment_loss
from avalign.training import study
from avalign.training.data.splits import load_splits
from avalign.training.evaluation.metrics import hierarchical_bootstrap
from avalign.training.train_align import (
    AlignArguments,
    JointAlignment,
    alignment_objective,
    freeze_lowest_layers,
    shuffled_images,
)
from avalign.training.train_pretrain import load_stage1

ENCODER = FastConformerConfig.from_preset("tiny")


def alignment_model(**head) -> FastConformerForImageAlignment:
    torch.manual_seed(0)
    config = FastConformerAlignmentConfig(encoder_config=ENCODER.to_dict(), image_embedding_dim=8, **head)
    return FastConformerForImageAlignment(config).eval()


def batch(size: int = 4, frames: int = 120) -> dict:
    generator = torch.Generator().manual_seed(1)
    return {
        "input_features": torch.randn(size, frames, ENCODER.num_mel_bins, generator=generator),
        "attention_mask": torch.ones(size, frames, dtype=torch.long),
        "image_embeddings": torch.randn(size, 8, generator=generator),
        "image_id": [f"img{i}" for i in range(size)],
        "language": ["hi", "hi", "en", "en"][:size],
    }


def align_arguments(**options) -> AlignArguments:
    return AlignArguments(corpus="c", init_encoder="e", teacher="t", embeddings_dir="x", **options)


def test_pooling_an_intermediate_block_gives_embeddings_of_the_same_shape_but_other_values():
    inputs = batch()
    last, _ = alignment_model().embed_audio(inputs["input_features"], inputs["attention_mask"])
    middle, _ = alignment_model(alignment_layer=1).embed_audio(inputs["input_features"], inputs["attention_mask"])
    assert middle.shape == last.shape == (4, 8)
    assert not torch.allclose(middle, last)


@pytest.mark.parametrize("layer", [0, ENCODER.num_hidden_layers + 1])
def test_an_alignment_layer_out_of_range_is_a_clear_error(layer):
    with pytest.raises(Exception, match="alignment_layer must be in 1.."):
        FastConformerAlignmentConfig(encoder_config=ENCODER.to_dict(), image_embedding_dim=8, alignment_layer=layer)


def test_the_joint_loss_is_the_masked_token_loss_plus_lambda_times_the_alignment_loss():
    stage1 = FastConformerForMaskedTokenPrediction(FastConformerMaskedTokenPredictionConfig(
        encoder_config=ENCODER.to_dict(), codebook_size=16, mask_probability=0.2, mask_block_size=4))  # fmt: skip
    aligned = alignment_model()
    joint = JointAlignment(aligned, stage1).eval()
    assert "encoder" not in dict(joint.stage1.named_children())  # one encoder, trained by both losses
    inputs = batch()
    torch.manual_seed(3)
    loss, logs = alignment_objective(align_arguments(joint_ssl=True, alignment_weight=0.5))(joint, inputs)
    torch.manual_seed(3)
    alignment_part, masked_part = joint(inputs["input_features"], attention_mask=inputs["attention_mask"],
                                        image_embeddings=inputs["image_embeddings"],
                                        image_groups=torch.arange(4))  # fmt: skip
    assert torch.allclose(loss, masked_part.loss + 0.5 * alignment_part.loss)
    assert logs["masked_loss"] == pytest.approx(masked_part.loss.item())
    assert logs["alignment_loss"] == pytest.approx(alignment_part.loss.item())


def test_frozen_blocks_and_the_subsampling_receive_no_gradient():
    model = alignment_model()
    model.train()
    freeze_lowest_layers(model.encoder, 1)
    inputs = batch()
    loss, _ = alignment_objective(align_arguments(freeze_layers=1))(model, inputs)
    loss.backward()
    frozen = [*model.encoder.subsampling.parameters(), *model.encoder.layers[0].parameters()]
    assert all(parameter.grad is None for parameter in frozen)
    assert all(parameter.grad is not None for parameter in model.encoder.layers[1].parameters())


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_within_language_negatives_ignore_every_cross_language_pair(kind):
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    positives = torch.eye(4, dtype=torch.bool)
    same_language = torch.tensor([0, 0, 1, 1])
    pairs = same_language[:, None] == same_language[None, :]
    changed = logits.masked_fill(~pairs, 50.0)  # cross-language pairs made very confusable
    assert alignment_loss(kind, logits, positives, logits, pairs) == pytest.approx(
        alignment_loss(kind, changed, positives, changed, pairs).item())
    assert alignment_loss(kind, logits, positives, logits) != pytest.approx(
        alignment_loss(kind, changed, positives, changed).item())


def test_the_shuffled_control_keeps_the_language_and_the_grouping_but_moves_every_image(smoke_corpus):
    paired = load_splits(str(smoke_corpus), ["paired"])
    shuffled = shuffled_images(paired, seed=0)
    language_of_image = dict(zip(paired["image_id"], paired["language"]))
    moved = dict(zip(paired["image_id"], shuffled["image_id"]))  # the same original image -> one new image
    assert all(language_of_image[new] == language_of_image[old] for old, new in moved.items())
    assert all(new != old for old, new in moved.items())
    assert len(set(moved.values())) == len(moved)  # a bijection: no image lost, none doubled
    for old, new in zip(paired["image_id"], shuffled["image_id"]):
        assert moved[old] == new


@pytest.mark.parametrize("options, message", [
    ({"alignment_weight": -0.1}, "alignment_weight"), ({"freeze_layers": -1}, "freeze_layers"),
    ({"negatives": "speaker"}, "negatives"), ({"image_pairing": "random"}, "image_pairing"),
])  # fmt: skip
def test_bad_stage2_options_fail_before_training(options, message):
    with pytest.raises(ValueError, match=message):
        align_arguments(**options)


def test_freezing_more_blocks_than_the_encoder_has_fails_before_training(tiny_encoder_dir):
    from avalign.training.train_align import build_model
    from avalign.training.trainer import AugmentationArguments

    arguments = AlignArguments(corpus="c", init_encoder=str(tiny_encoder_dir), teacher="t", embeddings_dir="x",
                               freeze_layers=ENCODER.num_hidden_layers + 1)  # fmt: skip
    with pytest.raises(ValueError, match="more than the encoder's"):
        build_model(arguments, 8, AugmentationArguments())


def test_continued_and_joint_need_a_stage1_checkpoint(tiny_encoder_dir):
    with pytest.raises(ValueError, match="needs a stage-1 checkpoint"):
        load_stage1(str(tiny_encoder_dir), "--init_model")


def test_unknown_arms_and_teachers_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown arm"):
        study.Study("smoke", tmp_path / "s", tmp_path / "b", arms=["baseline", "telepathy"])
    with pytest.raises(ValueError, match="unknown teacher"):
        study.Study("smoke", tmp_path / "s", tmp_path / "b").teacher("clip")


def records(edits_per_utterance: list[int]) -> list[dict]:
    """Utterances whose reference is 'aaaa' and whose hypothesis has the given number of substitutions."""
    return [{"utterance_id": f"u{i}", "language": "hi", "reference": "aaaa", "hypothesis": "b" * e + "a" * (4 - e)}
            for i, e in enumerate(edits_per_utterance)]  # fmt: skip


def test_hierarchical_bootstrap_finds_no_difference_between_the_same_runs_and_a_clear_one_between_others():
    noisy = [records([0, 1, 2, 1] * 10), records([1, 1, 1, 0] * 10), records([0, 2, 1, 1] * 10)]
    same = hierarchical_bootstrap(noisy, noisy, num_resamples=500)
    assert same["difference"] == 0 and same["ci_low"] <= 0 <= same["ci_high"]
    worse = [records([3, 3, 4, 3] * 10), records([3, 4, 3, 3] * 10)]
    clear = hierarchical_bootstrap(worse, noisy, num_resamples=500)
    assert clear["ci_low"] > 0 and clear["p_value"] < 0.05 and (clear["seeds_a"], clear["seeds_b"]) == (2, 3)


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    arms = ["baseline", "continued", "joint"]
    results = study.Study("smoke", root / "study", root / "base", arms=arms, seeds=[0, 1]).run(jobs=2)  # 2 workers
    return root, arms, results


def test_the_study_writes_the_report_and_a_prediction_file_per_arm_seed_split_and_decoding(smoke_study):
    root, arms, results = smoke_study
    assert list(results["arms"]) == arms
    for arm, entry in results["arms"].items():
        for split in study.SPLITS:
            for decoding in study.DECODINGS:
                paths = entry["predictions"][split][decoding]
                assert len(paths) == 2 and all(json.loads(open(p).readline())["utterance_id"] for p in paths)
                assert len(entry["cer"][split][decoding]["per_seed"]) == 2
        if arm != "baseline":
            assert set(entry["vs_baseline"]) == set(study.SPLITS)
    assert "recall_after" in results["arms"]["joint"]["stage2"]
    report = (root / "study" / "report.md").read_text()
    assert "Difference to `continued`" in report and (root / "study" / "plots" / "study.png").stat().st_size > 0
    assert json.loads((root / "study" / "results.json").read_text())["chosen_on_dev_ood"]["arm"] == "joint"
    assert list(results["probe"]) == ["baseline", "continued", "joint"]  # the controls and the chosen arm
    for entry in results["probe"].values():
        layers = len(entry["layers"])
        assert len(entry["ctc_dev_cer"]) == len(entry["recall@1"]) == layers and entry["layers"][0] == 0
    assert "## Where the encoder changes" in report and (root / "study" / "plots" / "probe.png").stat().st_size > 0


def test_a_second_study_run_trains_only_the_new_arm(smoke_study, caplog):
    root, arms, _ = smoke_study
    timings_before = json.loads((root / "study" / "pipeline_state.json").read_text())["timings_seconds"]
    with caplog.at_level("INFO", logger="avalign"):
        study.Study("smoke", root / "study", root / "base", arms=[*arms, "oracle"], seeds=[0, 1]).run()
    started = [r.getMessage() for r in caplog.records if r.getMessage().endswith("] starting")]
    assert started and all("oracle" in message for message in started)
    timings_after = json.loads((root / "study" / "pipeline_state.json").read_text())["timings_seconds"]
    assert {k: v for k, v in timings_after.items() if "oracle" not in k} == timings_before
