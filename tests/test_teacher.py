"""Stage 0 (training/teacher.py): vision teacher, image-embedding cache and the tiny SigLIP default."""

import io
import json
import logging
from itertools import product

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from PIL import ImageDraw
import transformers
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, SiglipModel, ViTConfig, ViTModel

from avalign.training import teacher as stage0
from avalign.training.corpus.scenes import BACKGROUNDS, KINDS, MAX_COUNT, POSITIONS, Scene
from avalign.training.corpus.scenes import COLOURS as SCENE_COLOURS
from avalign.training.corpus.synth import image_caption
from avalign.training.teacher import (
    MANIFEST_FILE,
    ORACLE_FINGERPRINT,
    TEACHER_METRICS_FILE,
    VisionTeacher,
    all_scenes,
    caption_recall_at_1,
    embed_images,
    embed_scene_attributes,
    image_embedding_cache,
    load_image_embeddings,
    pool_image_features,
    save_random_teacher,
    scene_vector,
    scenes_by_caption,
    train_tiny_siglip,
)

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (240, 210, 30)}
SHAPES = ("circle", "square", "triangle")
TINY = dict(image_size=32, patch_size=16, hidden_size=32, num_layers=1, steps=20, batch_size=8)
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)  # tiny random models


def draw_scene(colour: str, shape: str, side: str, size: int = 48) -> PILImage.Image:
    image = PILImage.new("RGB", (size, size), (235, 235, 225))
    left = 4 if side == "left" else size // 2 + 2
    box = (left, size // 4, left + size // 2 - 6, 3 * size // 4)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        draw.rectangle(box, fill=COLOURS[colour])
    else:
        draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=COLOURS[colour])
    return image


def png_bytes(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


SCENES = list(product(COLOURS, SHAPES, ("left", "right")))  # 24 (colour, shape, side)
IMAGES = [draw_scene(*scene) for scene in SCENES]
CAPTIONS = [f"a {colour} {shape} on the {side}" for colour, shape, side in SCENES]
IMAGE_IDS = [f"img{index:02d}" for index in range(len(SCENES))]


def image_dataset(image_ids, images, captions=None) -> Dataset:
    """Rows in the corpus schema: `image` as {"bytes", "path"}, or None / junk bytes as given."""
    encoded = [{"bytes": png_bytes(im), "path": None} if isinstance(im, PILImage.Image) else im for im in images]
    rows = {"image_id": list(image_ids), "image": encoded, "image_caption": list(captions or ["" for _ in image_ids])}
    features = Features(image_id=Value("string"), image=Image(), image_caption=Value("string"))
    return Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory):
    """(folder, metrics) of a tiny SigLIP trained on the fixture scenes."""
    folder = tmp_path_factory.mktemp("tiny-siglip")
    return folder, train_tiny_siglip(IMAGES, CAPTIONS, folder, seed=0, **TINY)


@pytest.fixture(scope="module")
def teacher(tiny_siglip):
    return VisionTeacher(tiny_siglip[0], device="cpu")


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    """A randomly initialised tiny ViT: a plain vision model whose output is a token sequence."""
    folder = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(image_size=32, patch_size=16, **SMALL)
    torch.manual_seed(0)
    ViTModel(config).save_pretrained(folder)
    transformers.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- tiny SigLIP


def test_tiny_siglip_loads_back_through_auto_classes(tiny_siglip, teacher):
    folder, metrics = tiny_siglip
    model = AutoModel.from_pretrained(folder)
    assert isinstance(model, SiglipModel)
    tokenizer, processor = AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)
    tokens = tokenizer(CAPTIONS[:4], padding="max_length", return_tensors="pt")
    assert (tokens.input_ids != tokenizer.unk_token_id).all()  # captions are in the vocabulary
    pixel_values = processor(images=IMAGES[:4], return_tensors="pt").pixel_values
    with torch.inference_mode():
        outputs = model(input_ids=tokens.input_ids, pixel_values=pixel_values)
    embeddings = teacher.embed(IMAGES[:4])
    assert embeddings.dtype == torch.float32
    assert embeddings.shape == (4, TINY["hidden_size"]) == (4, teacher.embedding_dim)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(embeddings, outputs.image_embeds)

    assert json.loads((folder / TEACHER_METRICS_FILE).read_text()) == metrics
    assert metrics["held_out_images"] + metrics["train_images"] == len(IMAGES)
    assert 0.0 <= metrics["caption_recall_at_1"] <= 1.0


def test_tiny_siglip_is_deterministic_with_a_seed(tiny_siglip, teacher, tmp_path):
    metrics = train_tiny_siglip(IMAGES, CAPTIONS, tmp_path / "again", seed=0, **TINY)
    assert metrics["final_train_loss"] == tiny_siglip[1]["final_train_loss"]
    again = VisionTeacher(tmp_path / "again", device="cpu").fingerprint
    assert {key: again[key] for key in stage0.FINGERPRINT_CHECKED_KEYS} == {
        key: teacher.fingerprint[key] for key in stage0.FINGERPRINT_CHECKED_KEYS
    }


def test_caption_recall_at_1_on_a_constructed_case():
    captions = ["red", "blue", "green", "red"]
    caption_embeddings = torch.eye(4)
    # image 0 -> caption 0 (hit), 1 -> caption 2 (miss), 2 -> caption 2 (hit), 3 -> caption 0: same text "red" (hit)
    image_embeddings = caption_embeddings[[0, 2, 2, 0]] + 0.1 * caption_embeddings[[1, 1, 3, 3]]
    retrieved = [0, 2, 2, 0]
    expected = sum(captions[j] == captions[i] for i, j in enumerate(retrieved)) / len(captions)
    assert caption_recall_at_1(image_embeddings, caption_embeddings, captions) == expected
    assert caption_recall_at_1(caption_embeddings, caption_embeddings, captions) == 1.0


# ----------------------------------------------------------------------------- pooling


def test_plain_vision_model_is_mean_pooled_over_tokens(vit_dir):
    vit_teacher = VisionTeacher(vit_dir, device="cpu")
    model = ViTModel.from_pretrained(vit_dir).eval()
    pixel_values = AutoImageProcessor.from_pretrained(vit_dir)(images=IMAGES[:3], return_tensors="pt").pixel_values
    with torch.inference_mode():
        tokens = model(pixel_values=pixel_values).last_hidden_state  # (B, T, D)
    torch.testing.assert_close(vit_teacher.embed(IMAGES[:3]), F.normalize(tokens.mean(dim=1), dim=-1))
    assert vit_teacher.embedding_dim == SMALL["hidden_size"]


def tiny_clip():
    """get_image_features -> pooler_output after the projection."""
    vision_config = dict(SMALL, image_size=32, patch_size=16)
    config = transformers.CLIPConfig(text_config=dict(SMALL, vocab_size=50), vision_config=vision_config, projection_dim=16)
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return transformers.CLIPModel(config), processor, config.projection_dim


def tiny_siglip2():
    """NaFlex inputs: pixel_values, pixel_attention_mask, spatial_shapes."""
    config = transformers.Siglip2Config(
        text_config=dict(SMALL, vocab_size=50), vision_config=dict(SMALL, patch_size=8, num_patches=16)
    )
    processor = transformers.Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16)
    return transformers.Siglip2Model(config), processor, SMALL["hidden_size"]


def tiny_qwen3_vl():
    """get_image_features -> one merged-token sequence per image."""
    vision_config = dict(
        depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=24, patch_size=8,
        spatial_merge_size=2, temporal_patch_size=2, deepstack_visual_indexes=[0], num_position_embeddings=64,
    )  # fmt: skip
    text_config = dict(
        vocab_size=100, hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=12, rope_scaling={"rope_type": "default", "mrope_section": [2, 2, 2]},
    )  # fmt: skip
    config = transformers.Qwen3VLConfig(vision_config=vision_config, text_config=text_config)
    processor = transformers.Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=64 * 64
    )
    return transformers.Qwen3VLModel(config), processor, vision_config["out_hidden_size"]


TINY_MODELS = {"clip": tiny_clip, "siglip2": tiny_siglip2, "qwen3_vl": tiny_qwen3_vl}  # (model, processor, dim)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_get_image_features_models_give_one_unit_vector_per_image(name, tmp_path):
    torch.manual_seed(0)
    model, image_processor, embedding_dim = TINY_MODELS[name]()
    model.save_pretrained(tmp_path)
    image_processor.save_pretrained(tmp_path)
    vision_teacher = VisionTeacher(tmp_path, device="cpu")
    embeddings = vision_teacher.embed(IMAGES[:3])
    assert type(vision_teacher.model) is type(model) and embeddings.shape == (3, embedding_dim)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    assert torch.cdist(embeddings, embeddings)[0, 1:].min() > 1e-4  # distinct images, distinct embeddings


def test_pool_image_features_per_image_token_sequences():
    sequences = (torch.randn(5, 8), torch.randn(3, 8))  # Qwen3-VL: one (T_i, D) per image
    expected = torch.stack([sequences[0].mean(dim=0), sequences[1].mean(dim=0)])
    torch.testing.assert_close(pool_image_features(sequences), expected)
    batch = torch.randn(2, 4, 8)
    torch.testing.assert_close(pool_image_features(batch), batch.mean(dim=1))


# ----------------------------------------------------------------------------- cache


def test_cache_hit_makes_no_teacher_calls(teacher, tiny_siglip, tmp_path):
    repeats = [0, 0, 1, 2, 2, 2, 3]  # several utterances per image, and rows without an image
    dataset = image_dataset([IMAGE_IDS[i] for i in repeats] + ["", ""], [IMAGES[i] for i in repeats] + [None, None])
    first = embed_images(teacher, dataset, tmp_path, batch_size=3)
    assert (first.requested_rows, first.rows_without_image) == (len(repeats) + 2, 2)
    assert first.unique_images == first.teacher_calls == len(set(repeats)) and not first.skipped
    torch.testing.assert_close(first.lookup(IMAGE_IDS[:4]), teacher.embed(IMAGES[:4]))

    second = embed_images(VisionTeacher(tiny_siglip[0], device="cpu"), dataset, tmp_path)
    assert second.teacher_calls == 0 and second.counters()["cache_hits"] == len(set(repeats))
    torch.testing.assert_close(second.lookup(IMAGE_IDS[:4]), first.lookup(IMAGE_IDS[:4]))
    torch.testing.assert_close(load_image_embeddings(tmp_path).embeddings, first.embeddings)


def test_partial_cache_computes_only_new_ids(teacher, tmp_path):
    embed_images(teacher, image_dataset(IMAGE_IDS[:5], IMAGES[:5]), tmp_path)
    before = load_image_embeddings(tmp_path)
    pairs = list(zip(IMAGE_IDS[3:9], IMAGES[3:9]))  # an iterable of (image_id, PIL image): 3, 4 cached
    result = embed_images(teacher, pairs, tmp_path, batch_size=2)
    assert (result.requested_rows, result.unique_images, result.teacher_calls) == (6, 6, 4)
    assert len(result) == len(load_image_embeddings(tmp_path)) == 9
    torch.testing.assert_close(result.lookup(IMAGE_IDS[:5]), before.lookup(IMAGE_IDS[:5]))
    torch.testing.assert_close(result.lookup(IMAGE_IDS[5:9]), teacher.embed(IMAGES[5:9]))


def test_cache_of_another_teacher_is_detected(teacher, tiny_siglip, vit_dir, tmp_path):
    dataset = image_dataset(IMAGE_IDS[:4], IMAGES[:4])
    embed_images(teacher, dataset, tmp_path)
    with pytest.raises(ValueError, match="config_sha256.*weights_sha256") as error:
        embed_images(VisionTeacher(vit_dir, device="cpu"), dataset, tmp_path)
    assert "--rebuild-stale-cache" in str(error.value)

    # same architecture, other weights: only the weights digest tells them apart
    retrained = tmp_path / "retrained"
    torch.manual_seed(1)
    SiglipModel(AutoModel.from_pretrained(tiny_siglip[0]).config).save_pretrained(retrained)
    AutoImageProcessor.from_pretrained(tiny_siglip[0]).save_pretrained(retrained)
    other = VisionTeacher(retrained, device="cpu")
    differing = [key for key in other.fingerprint if other.fingerprint[key] != teacher.fingerprint[key]]
    assert differing == ["model", "weights_sha256"]
    with pytest.raises(ValueError, match="weights_sha256 differ"):
        embed_images(other, dataset, tmp_path)

    rebuilt = embed_images(other, dataset, tmp_path, rebuild_stale=True)
    assert rebuilt.teacher_calls == 4
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["teacher"] == other.fingerprint
    torch.testing.assert_close(rebuilt.lookup(IMAGE_IDS[:4]), other.embed(IMAGES[:4]))


def test_missing_and_corrupt_images_are_counted_skips(teacher, tmp_path, caplog):
    junk = {"bytes": b"not an image", "path": None}
    dataset = image_dataset(["good", "junk", "none", "good"], [IMAGES[0], junk, None, IMAGES[0]])
    with caplog.at_level(logging.WARNING, logger=stage0.__name__):
        result = embed_images(teacher, dataset, tmp_path)
    assert set(result.skipped) == {"junk", "none"}
    assert "unreadable" in result.skipped["junk"] and "missing" in result.skipped["none"]
    assert (result.teacher_calls, result.counters()["skipped"], len(result)) == (1, 2, 1)
    assert "skipped 2 image(s)" in caplog.text and "junk" in caplog.text
    with pytest.raises(KeyError, match="junk"):
        result.lookup(["good", "junk"])

    again = embed_images(teacher, [("none", None), ("truncated", png_bytes(IMAGES[1])[:40])], tmp_path)
    assert set(again.skipped) == {"none", "truncated"} and again.teacher_calls == 0


# ----------------------------------------------------------------------------- CLI


def test_cli_trains_the_default_teacher_then_reuses_everything(tmp_path, capsys):
    splits = {"paired": range(0, 16), "train": range(16, 20), "test": range(20, 24)}
    corpus = DatasetDict(
        {
            name: image_dataset([IMAGE_IDS[i] for i in rows], [IMAGES[i] for i in rows], [CAPTIONS[i] for i in rows])
            for name, rows in splits.items()
        }
    )
    corpus.save_to_disk(tmp_path / "corpus")
    argv = ["--corpus", str(tmp_path / "corpus"), "--output-dir", str(tmp_path / "out"), "--steps", "2"]
    first = stage0.main(argv)
    metrics = json.loads((tmp_path / "out" / "teacher" / TEACHER_METRICS_FILE).read_text())
    assert metrics["train_images"] + metrics["held_out_images"] == 20  # test images never train the teacher
    assert first.teacher_calls == first.unique_images == 24

    second = stage0.main(argv)
    assert second.teacher_calls == 0 and len(second) == 24
    assert json.dumps(second.counters()) in capsys.readouterr().out


# ----------------------------------------------------------------------------- oracle and random teachers

RED_CIRCLE = Scene("circle", "red", 1, "left", "sky blue")
TWO_BLUE_CIRCLES = Scene("circle", "blue", 2, "left", "sky blue")
PURPLE_TREES = Scene("tree", "purple", 3, "top", "mint")


def test_oracle_vectors_are_unit_one_hots_that_tell_scenes_apart():
    assert not torch.equal(scene_vector(RED_CIRCLE), scene_vector(TWO_BLUE_CIRCLES))
    caption = image_caption(PURPLE_TREES)
    assert caption == "three purple trees at the top, mint background"
    torch.testing.assert_close(scene_vector(scenes_by_caption()[caption]), scene_vector(PURPLE_TREES))

    vectors = torch.stack([scene_vector(scene) for scene in all_scenes()])  # (N, D)
    dim = len(KINDS) + len(SCENE_COLOURS) + MAX_COUNT + len(POSITIONS) + len(BACKGROUNDS)
    assert vectors.dtype == torch.float32 and vectors.shape == (len(all_scenes()), dim)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(len(vectors)))
    assert len(vectors.unique(dim=0)) == len(vectors)  # one vector per scene


def test_caption_inverse_covers_every_scene(monkeypatch):
    scenes = all_scenes()
    assert len(scenes) == len(KINDS) * len(SCENE_COLOURS) * MAX_COUNT * len(POSITIONS) * len(BACKGROUNDS)
    by_caption = scenes_by_caption()
    assert len(by_caption) == len(scenes)
    assert all(by_caption[image_caption(scene)] == scene for scene in scenes)

    monkeypatch.setattr(stage0, "image_caption", lambda scene: f"{scene.kind} {scene.colour}")  # not injective
    stage0.scenes_by_caption.cache_clear()
    try:
        with pytest.raises(ValueError, match="share the caption"):
            stage0.scenes_by_caption()
    finally:
        monkeypatch.undo()
        stage0.scenes_by_caption.cache_clear()


def test_embed_scene_attributes_caches_known_scenes_and_skips_unknown_captions(teacher, tmp_path, caplog):
    ids = ["red", "red", "trees", "", "odd", "blank"]  # repeated id, a row without an image, two bad captions
    captions = [image_caption(RED_CIRCLE)] * 2 + [image_caption(PURPLE_TREES), "", "a unicorn on the moon", ""]
    dataset = image_dataset(ids, [IMAGES[0], IMAGES[0], IMAGES[1], None, IMAGES[2], IMAGES[3]], captions)
    cache_dir = tmp_path / "oracle"
    with caplog.at_level(logging.WARNING, logger=stage0.__name__):
        result = embed_scene_attributes(dataset, cache_dir)
    assert (result.requested_rows, result.rows_without_image, result.unique_images) == (6, 1, 4)
    assert result.teacher_calls == 2 and set(result.skipped) == {"odd", "blank"}
    assert "unicorn" in result.skipped["odd"] and "skipped 2 image(s)" in caplog.text
    expected = torch.stack([scene_vector(RED_CIRCLE), scene_vector(PURPLE_TREES)])
    torch.testing.assert_close(result.lookup(["red", "trees"]), expected)

    cached = load_image_embeddings(cache_dir)
    assert cached.teacher == ORACLE_FINGERPRINT and set(stage0.FINGERPRINT_CHECKED_KEYS) < set(cached.teacher)
    torch.testing.assert_close(cached.lookup(["red", "trees"]), result.lookup(["red", "trees"]))
    again = image_embedding_cache("oracle", DatasetDict(train=dataset), cache_dir)
    assert again.teacher_calls == 0 and again.counters()["cache_hits"] == 2 and len(again) == 2

    embed_images(teacher, dataset.select([0]), tmp_path / "siglip")
    with pytest.raises(ValueError, match="another teacher"):
        embed_scene_attributes(dataset, tmp_path / "siglip")
    with pytest.raises(ValueError, match="another teacher"):
        embed_images(teacher, dataset, cache_dir)


def test_oracle_needs_the_image_caption_column(tmp_path):
    dataset = image_dataset(IMAGE_IDS[:2], IMAGES[:2]).remove_columns("image_caption")
    with pytest.raises(ValueError, match="oracle teacher needs the embedded corpus's image_caption column"):
        embed_scene_attributes(dataset, tmp_path)


def test_random_teacher_has_the_architecture_but_not_the_weights(tiny_siglip, teacher, tmp_path):
    folder = save_random_teacher(tiny_siglip[0], tmp_path / "random", seed=0)
    random_teacher = VisionTeacher(folder, device="cpu")
    assert random_teacher.embedding_dim == teacher.embedding_dim
    assert random_teacher.fingerprint["config_sha256"] == teacher.fingerprint["config_sha256"]
    assert random_teacher.fingerprint["weights_sha256"] != teacher.fingerprint["weights_sha256"]
    same_seed = VisionTeacher(save_random_teacher(tiny_siglip[0], tmp_path / "again", seed=0), device="cpu")
    assert same_seed.fingerprint["weights_sha256"] == random_teacher.fingerprint["weights_sha256"]
    assert save_random_teacher(tiny_siglip[0], folder, seed=1) == folder  # kept: same weights
    assert VisionTeacher(folder, device="cpu").fingerprint == random_teacher.fingerprint


def test_image_embedding_cache_takes_oracle_folders_and_hub_ids_only(tiny_siglip, teacher, tmp_path):
    with pytest.raises(ValueError, match=r"'nonsense teacher!'.*'oracle', an existing model folder or a Hub id"):
        image_embedding_cache("nonsense teacher!", image_dataset(IMAGE_IDS[:1], IMAGES[:1]), tmp_path)
    result = image_embedding_cache(str(tiny_siglip[0]), image_dataset(IMAGE_IDS[:2], IMAGES[:2]), tmp_path)
    assert result.teacher == teacher.fingerprint and result.teacher_calls == 2
