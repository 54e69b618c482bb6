"""Predictor.from_onnx: an exported model in ONNX Runtime gives the PyTorch predictor's
Instances, at each image's own size, and refuses files that are not exports."""
import numpy as np
import pytest
import torch

from condseg import Predictor
from condseg.data.shapes import render_scene
from condseg.data.shapes_video import moving_scenes
from condseg.export import NotAnExportError

pytestmark = pytest.mark.slow  # the export of the tiny model takes about half a minute


def _mask_iou(a, b):
    inter, union = (a & b).sum().item(), (a | b).sum().item()
    return 1.0 if union == 0 else inter / union


@pytest.mark.parametrize("export,min_iou", [("tiny_onnx", 0.99), ("tiny_onnx_stride", 0.999)])
@pytest.mark.parametrize("seed,size", enumerate([(160, 120), (128, 112), (96, 144)]))
def test_onnx_predictor_gives_the_pytorch_predictors_instances(request, tiny_model, export, min_iou, seed, size):
    """Both mask resolutions; masks exported at the stride are pasted by the model's own
    ``postprocess_masks``, so only ONNX Runtime's arithmetic can make them differ."""
    image = render_scene(moving_scenes(1, *size, seed=seed)[0])[0]
    expected = Predictor(*tiny_model, confidence_threshold=0.0)(image)
    got = Predictor.from_onnx(request.getfixturevalue(export), confidence_threshold=0.0)(image)
    assert got.image_size == expected.image_size == image.shape[:2]
    assert len(got) == len(expected) >= 1
    assert torch.equal(got.pred_classes, expected.pred_classes)
    torch.testing.assert_close(got.scores, expected.scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor, atol=1e-2, rtol=0)
    assert got.pred_masks.dtype == torch.bool and got.pred_masks.shape == expected.pred_masks.shape
    assert min(_mask_iou(a, b) for a, b in zip(got.pred_masks, expected.pred_masks)) >= min_iou


def test_onnx_predictor_has_the_methods_of_the_pytorch_one(tiny_onnx):
    p = Predictor.from_onnx(tiny_onnx, confidence_threshold=0.0)
    image = render_scene(moving_scenes(1, 160, 120, seed=0)[0])[0]
    inst = p(image)
    rgb = Predictor.from_onnx(tiny_onnx, confidence_threshold=0.0, input_format="RGB")(np.ascontiguousarray(image[:, :, ::-1]))
    torch.testing.assert_close(rgb.scores, inst.scores)
    records = p.to_records(inst)
    assert len(records) == len(inst) and {"bbox", "score", "category_id", "segmentation"} <= set(records[0])
    assert p.render(image, inst).shape == image.shape
    assert len(p.class_names) == p.cfg.MODEL.FCOS.NUM_CLASSES


def test_a_file_that_is_not_an_export_is_refused_by_name(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(NotAnExportError, match="model.onnx"):
        Predictor.from_onnx(str(path))
