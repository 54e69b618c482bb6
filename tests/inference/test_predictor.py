"""condseg.Predictor: single images and batches, channel order, threshold, strict weights."""
import os

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog

from condseg import Predictor
from condseg.data.shapes_video import moving_scenes
from condseg.data.shapes import SHAPES_CLASSES, render_scene
from condseg.inference import WeightsMismatchError
from builders.classes import QUIRKY_CLASSES, QUIRKY_ID_MAP


@pytest.fixture(scope="module")
def images():
    """Three shapes images of different sizes (BGR uint8)."""
    out = []
    for seed, (w, h) in enumerate([(160, 120), (128, 112), (96, 144)]):
        out.append(render_scene(moving_scenes(1, w, h, seed=seed)[0])[0])
    return out


@pytest.fixture(scope="module")
def predictor(tiny_model):
    config, weights = tiny_model
    return Predictor(config, weights, confidence_threshold=0.0)


def test_predictor_returns_instances_at_image_size(predictor, images):
    inst = predictor(images[0])
    assert inst.image_size == images[0].shape[:2]
    n = len(inst)
    assert 1 <= n <= 3  # MODEL.FCOS.POST_NMS_TOPK_TEST of the tiny model
    assert inst.pred_masks.shape == (n, *images[0].shape[:2]) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_boxes.tensor.device.type == "cpu"
    # the tiny model's masks are diamonds of L1 radius RADIUS * 64 px (P3) or more: never
    # empty, never the whole image
    area = inst.pred_masks.flatten(1).sum(1)
    assert (area > 0).all() and (area < images[0].shape[0] * images[0].shape[1]).all()


def test_batch_equals_one_by_one(predictor, images):
    same_size = [images[0], np.ascontiguousarray(images[0][::-1])]
    for image, b in zip(same_size, predictor(same_size)):
        single = predictor(image)
        torch.testing.assert_close(b.scores, single.scores, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b.pred_boxes.tensor, single.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
        assert (b.pred_masks != single.pred_masks).float().mean() < 1e-3


def test_batch_of_different_sizes_gives_each_image_its_size(predictor, images):
    # (padded to a common size in the batch, so scores may move slightly near borders)
    batched = predictor(images)
    assert len(batched) == len(images)
    for image, b in zip(images, batched):
        assert b.image_size == image.shape[:2] and b.pred_masks.shape[1:] == image.shape[:2]
        assert len(b) >= 1


def test_rgb_input_format_gives_the_same_result(tiny_model, predictor, images):
    config, weights = tiny_model
    rgb = Predictor(config, weights, confidence_threshold=0.0, input_format="RGB")
    a, b = predictor(images[0]), rgb(np.ascontiguousarray(images[0][:, :, ::-1]))
    torch.testing.assert_close(a.scores, b.scores)
    assert torch.equal(a.pred_masks, b.pred_masks)
    # rendering keeps the caller's channel order
    drawn_bgr = predictor.render(images[0], a)
    drawn_rgb = rgb.render(np.ascontiguousarray(images[0][:, :, ::-1]), b)
    assert np.array_equal(drawn_bgr, drawn_rgb[:, :, ::-1])


def test_batch_norms_are_folded_unless_the_config_says_not(tiny_model, predictor, images):
    """TEST.FOLD_BATCH_NORMS (on by default): the predictor's convolutions carry their batch
    norms (the quickstart's BN, in eval mode); off, the norms stay; the same detections."""
    from detectron2.layers import FrozenBatchNorm2d

    config, weights = tiny_model
    unfolded = Predictor(config, weights, opts=["TEST.FOLD_BATCH_NORMS", "False"], confidence_threshold=0.0)
    norms = lambda p: sum(isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)) for m in p.model.modules())  # noqa: E731
    assert norms(predictor) == 0 and norms(unfolded) > 0
    a, b = predictor(images[0]), unfolded(images[0])
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
    assert (a.pred_masks != b.pred_masks).float().mean() < 1e-3


def test_confidence_threshold_filters(tiny_model, predictor, images):
    config, weights = tiny_model
    scores = predictor(images[0]).scores
    cut = float(scores.median())
    strict = Predictor(config, weights, confidence_threshold=cut)(images[0])
    assert len(strict) == int((scores >= cut).sum()) and (strict.scores >= cut).all()


def test_records_and_coco_file(predictor, images):
    inst = predictor(images[0])
    records = predictor.to_records(inst)
    assert [r["category_name"] for r in records] == [predictor.class_names[c] for c in inst.pred_classes.tolist()]
    assert all(r["area"] == int(m.sum()) for r, m in zip(records, inst.pred_masks))
    coco = predictor.to_coco([{"id": 7, "file_name": "a.png", "height": 120, "width": 160}], [inst])
    assert [a["image_id"] for a in coco["annotations"]] == [7] * len(inst)
    assert len(coco["categories"]) == len(predictor.class_names)


def test_weights_bring_the_class_names_they_were_trained_on(named_tiny_model, images, condseg_log):
    config, weights, entry = named_tiny_model
    predictor = Predictor(config, weights, confidence_threshold=0.0)
    assert predictor.metadata.thing_classes == QUIRKY_CLASSES
    assert predictor.metadata.thing_dataset_id_to_contiguous_id == QUIRKY_ID_MAP
    assert predictor.class_names == QUIRKY_CLASSES + ["4", "5", "6", "7"]  # 8 classes in the model, 4 in the json
    assert predictor.dataset_ids == [3, 7, 42, 99, 100, 101, 102, 103]
    inst = predictor(images[0])
    assert len(inst)
    records = predictor.to_records(inst)
    assert [r["category_name"] for r in records] == [predictor.class_names[c] for c in inst.pred_classes.tolist()]
    assert [r["category_id"] for r in records] == [predictor.dataset_ids[c] for c in inst.pred_classes.tolist()]
    coco = predictor.to_coco([{"id": 1, "file_name": "a.png", "height": 120, "width": 160}], [inst])
    assert coco["categories"][:4] == [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"},
                                      {"id": 42, "name": "triangle"}, {"id": 99, "name": "hexagon"}]
    assert condseg_log.text.count(
        f"{weights}: the weights were trained on 4 classes (circle, square, triangle, hexagon); the config's "
        "dataset condseg_shapes_val has 8 (ellipse, triangle, ") == 1


def test_weights_without_class_names_keep_the_configs_dataset(tiny_model, condseg_log):
    predictor = Predictor(*tiny_model)  # the checkpoint of an older training, or a converted one
    assert predictor.metadata is MetadataCatalog.get("condseg_shapes_val")
    assert predictor.class_names == list(SHAPES_CLASSES) and predictor.dataset_ids == list(range(8))
    assert "trained on" not in condseg_log.text


def test_weights_that_do_not_match_the_config_name_the_file(tiny_model, tmp_path):
    config, weights = tiny_model
    state = torch.load(weights, weights_only=True)["model"]
    # another mask-branch width: shapes differ
    bad = {k: (v[:, :8] if k.endswith("controller.weight") else v) for k, v in state.items()}
    path = str(tmp_path / "other.pth")
    torch.save({"model": bad}, path)
    with pytest.raises(WeightsMismatchError, match=r"other\.pth does not match .*controller\.weight"):
        Predictor(config, path)
    # a checkpoint of only a backbone: parameters missing
    partial = {k: v for k, v in state.items() if k.startswith("backbone.")}
    torch.save({"model": partial}, path)
    with pytest.raises(WeightsMismatchError, match=r"parameters are missing from it: .*proposal_generator"):
        Predictor(config, path)


def test_missing_or_garbage_weights_files(tiny_model, tmp_path):
    config, _ = tiny_model
    with pytest.raises(FileNotFoundError, match=r"no such file: .*nowhere\.pth"):
        Predictor(config, str(tmp_path / "nowhere.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(WeightsMismatchError, match=r"junk\.pth: not a model checkpoint"):
        Predictor(config, str(junk))


def test_bad_image_argument(predictor):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor(np.zeros((10, 10), np.uint8))



def test_fp16_is_ignored_on_the_cpu(tiny_model, images):
    p = Predictor(*tiny_model, device="cpu", confidence_threshold=0.0, fp16=True)
    assert p.fp16 is False and p(images[0]).scores.dtype == torch.float32


@pytest.mark.cuda
def test_fp16_on_cuda_agrees_with_fp32(tiny_model, images):
    full = Predictor(*tiny_model, device="cuda", confidence_threshold=0.0)(images[0])
    half = Predictor(*tiny_model, device="cuda", confidence_threshold=0.0, fp16=True)(images[0])
    assert half.scores.dtype == torch.float32 and half.pred_boxes.tensor.device.type == "cpu"
    assert len(half) == len(full)
    torch.testing.assert_close(half.scores, full.scores, atol=2e-2, rtol=0)
