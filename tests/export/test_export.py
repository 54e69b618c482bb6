"""condseg.export: whole models (dynamic mask heads included) exported to ONNX and run in
ONNX Runtime against the PyTorch model in eval mode on the same resized input.

Each model is exported once (module fixtures) and its ONE file is run on images of three
sizes: same number of detections, boxes within 1e-3 px, scores within 1e-4, the same
classes, and every instance's mask (probabilities > 0.5) with IoU >= 0.99 against the
model's ``pred_masks``. Random weights need a score threshold of 0 (and a small post-NMS
cap) to give detections.
"""
import os

import numpy as np
import onnx
import pytest
import torch
from detectron2.modeling import build_model

from condseg.config_setup import setup_cfg
from condseg.export import ExportableModel, OnnxModel, export_onnx
from condseg.export.metadata import class_names_of
from condseg.inference.predictor import load_weights_strict
from condseg.modeling.condinst.condinst import postprocess_masks

SIZES = ((100, 150), (160, 96), (203, 131))  # one file, three sizes (two need padding)
LOOSE = ["MODEL.FCOS.INFERENCE_TH_TEST", "0.0", "MODEL.FCOS.POST_NMS_TOPK_TEST", "10"]
BOX_ATOL, SCORE_ATOL, MIN_MASK_IOU = 1e-3, 1e-4, 0.99


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def _reference(model, image: torch.Tensor):
    """The PyTorch model's instances for ``image`` at its own size (no resize)."""
    with torch.no_grad():
        return model([{"image": image, "height": image.shape[1], "width": image.shape[2]}])[0]["instances"]


def mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-instance IoU of two ``(D, H, W)`` bool stacks (1 where both are empty)."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def assert_parity(model, onnx_model: OnnxModel, image: torch.Tensor) -> dict:
    """Assert the ONNX outputs match the model's on ``image``; returns the differences."""
    ref = _reference(model, image)
    out = onnx_model(image)
    n = len(ref)
    assert out["boxes"].shape == (n, 4), f"{len(out['boxes'])} detections in ONNX, {n} in PyTorch"
    box_diff = float(np.abs(out["boxes"] - ref.pred_boxes.tensor.numpy()).max(initial=0))
    score_diff = float(np.abs(out["scores"] - ref.scores.numpy()).max(initial=0))
    assert box_diff <= BOX_ATOL and score_diff <= SCORE_ATOL, (box_diff, score_diff)
    assert out["classes"].dtype == np.int64
    np.testing.assert_array_equal(out["classes"], ref.pred_classes.numpy())
    stats = {"detections": n, "box": box_diff, "score": score_diff}
    if ref.has("pred_masks"):
        assert out["masks"].shape == (n, *image.shape[1:])
        ious = mask_ious(out["masks"] > 0.5, ref.pred_masks.numpy())
        stats["mask_iou"] = float(ious.min(initial=1.0))
        assert stats["mask_iou"] >= MIN_MASK_IOU, ious
    else:
        assert "masks" not in out
    print(f"parity {tuple(image.shape[1:])}: {stats}")
    return stats


def _export(cfg, folder, **kwargs):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = export_onnx(model, os.path.join(str(folder), "model.onnx"), cfg=cfg, **kwargs)
    return model, path


@pytest.fixture(scope="module")
def condinst_export(condinst_cfg, tmp_path_factory):
    cfg = condinst_cfg(*LOOSE)
    model, path = _export(cfg, tmp_path_factory.mktemp("condinst"))
    return cfg, model, path


@pytest.fixture(scope="module")
def fcos_export(fcos_cfg, tmp_path_factory):
    model, path = _export(fcos_cfg(*LOOSE), tmp_path_factory.mktemp("fcos"))
    return model, path


def _parity_on_three_sizes(model, path):
    onnx_model = OnnxModel(path)
    stats = [assert_parity(model, onnx_model, _image(h, w, seed)) for seed, (h, w) in enumerate(SIZES)]
    assert all(s["detections"] > 0 for s in stats), "nothing detected: the comparison would be empty"
    return stats


# ---------------------------------------------------------------- the traced module, in PyTorch
def _wrapper_parity(model, image):
    """The export wrapper, run eagerly, against the model: the rewritten decoding, NMS and
    mask computation (what gets traced) give the model's detections."""
    ref = _reference(model, image)
    out = ExportableModel(model)(image)
    assert len(out[0]) == len(ref) > 0
    assert (out[0] - ref.pred_boxes.tensor).abs().max() <= BOX_ATOL
    assert (out[1] - ref.scores).abs().max() <= SCORE_ATOL
    assert torch.equal(out[2], ref.pred_classes)
    if ref.has("pred_masks"):
        assert mask_ious((out[3] > 0.5).numpy(), ref.pred_masks.numpy()).min() >= MIN_MASK_IOU
    return out


EAGER_CASES = {
    "condinst": ("fcos_R18_shapes.yaml", "condinst"),
    "fcos": ("fcos_R18_shapes.yaml", "fcos"),
    "odconv": ("condinst_R18_odconv_shapes.yaml", None),
    "dcnv2": ("condinst_R18_dcnv2_shapes.yaml", None),
    "p2_pyramid": ("condinst_R18_p2_shapes.yaml", None),
    "no_rel_coords": ("condinst_R18_shapes.yaml", None, "MODEL.CONDINST.MASK_HEAD.DISABLE_REL_COORDS", "True"),
    "grouped_conv_heads": ("condinst_R18_shapes.yaml", None, "MODEL.CONDINST.MASK_HEAD.IMPL", "grouped_conv"),
}


@pytest.mark.parametrize("case", sorted(EAGER_CASES))
def test_export_wrapper_equals_the_model(case, quickstart_cfg, condinst_cfg, fcos_cfg):
    name, tiny, *opts = EAGER_CASES[case]
    cfg = {"condinst": condinst_cfg, "fcos": fcos_cfg}[tiny](*LOOSE) if tiny else quickstart_cfg(name, *LOOSE, *opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = _image(100, 150)
    with torch.no_grad():
        out = _wrapper_parity(model, image)
        as_float = ExportableModel(model)(image.float())
    for a, b in zip(out, as_float):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- parity in ONNX Runtime
@pytest.mark.slow
def test_condinst_matches_pytorch_on_three_sizes(condinst_export):
    _, model, path = condinst_export
    _parity_on_three_sizes(model, path)


@pytest.mark.slow
def test_fcos_matches_pytorch_on_three_sizes(fcos_export):
    _parity_on_three_sizes(*fcos_export)


# ODConv on res4-res5 only (stride-2 and stride-1 layers with per-sample kernels), which
# exports in 30 s instead of 50 s on two cores; the COCO configs export with ODConv everywhere
ODCONV_RES4_RES5 = ["MODEL.ODCONV.ON_PER_STAGE", "[False, False, True, True]"]


@pytest.mark.slow
@pytest.mark.parametrize("config, opts", [("condinst_R18_odconv_shapes.yaml", ODCONV_RES4_RES5),
                                          ("condinst_R18_dcnv2_shapes.yaml", [])], ids=["odconv", "dcnv2"])
def test_dynamic_backbones_match_pytorch(quickstart_cfg, tmp_path, config, opts):
    cfg = quickstart_cfg(config, *LOOSE, *opts)
    model, path = _export(cfg, tmp_path)
    _parity_on_three_sizes(model, path)


@pytest.mark.slow
def test_trained_weights_through_the_tool(tiny_model, tiny_onnx):
    """The tiny diamond-mask CondInst: tools/export_model.py loads its weights strictly,
    exports and checks the file (the session's ``tiny_onnx``, whose fixture asserts the
    tool's exit status); the file matches the model with the same weights."""
    config, weights = tiny_model
    out = tiny_onnx
    cfg = setup_cfg(config)
    model = build_model(cfg).eval()
    load_weights_strict(model, weights)
    stats = _parity_on_three_sizes(model, out)
    masks = OnnxModel(out)(_image(*SIZES[0]))["masks"] > 0.5
    assert masks.any() and not masks.all(), "the diamonds should be neither empty nor the whole frame"
    assert all(s["mask_iou"] >= MIN_MASK_IOU for s in stats)


@pytest.mark.slow
def test_no_detections_is_an_empty_result(condinst_cfg, tmp_path):
    """D = 0 through the whole graph, masks included (the input size is fixed only to
    export faster: the number of detections stays dynamic)."""
    cfg = condinst_cfg("MODEL.FCOS.INFERENCE_TH_TEST", "1.0")
    model, path = _export(cfg, tmp_path, static_size=(100, 150))
    image = _image(100, 150)
    assert len(_reference(model, image)) == 0
    out = OnnxModel(path)(image)
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["classes"].shape == (0,)
    assert out["masks"].shape == (0, 100, 150)


@pytest.mark.slow
def test_stride_masks_are_the_models_global_masks_with_padding(condinst_cfg, tmp_path):
    """``mask_resolution="stride"`` on an image that needs padding, under a static
    maximum: the ``(N, H_pad / 4, W_pad / 4)`` probabilities the model pastes, the rows
    past ``num_detections`` zero, and the metadata the caller pastes with."""
    cfg = condinst_cfg(*LOOSE)
    model, path = _export(cfg, tmp_path, max_detections=16, mask_resolution="stride")
    m = OnnxModel(path)
    d = model.backbone.size_divisibility
    assert (m.mask_resolution, m.mask_stride, m.size_divisibility) == ("stride", 4, d) and d > 1
    padded = (-(-100 // d) * d, -(-150 // d) * d)
    image = _image(100, 150)
    ref, out = _reference(model, image), m(image)
    n = int(out["num_detections"])
    assert 0 < n == len(ref) and out["masks"].shape == (16, padded[0] // 4, padded[1] // 4)
    assert not out["masks"][n:].any()
    # pasted by the model's function, they are the model's masks
    pasted = postprocess_masks(torch.from_numpy(out["masks"][:n])[:, None], padded, (100, 150), (100, 150))
    assert mask_ious(pasted.numpy(), ref.pred_masks.numpy()).min() >= 0.999


@pytest.mark.slow
def test_static_shapes_pad_to_max_detections(condinst_cfg, tmp_path):
    cfg = condinst_cfg(*LOOSE)
    model, path = _export(cfg, tmp_path, static_size=(96, 128), max_detections=16)
    graph_input = onnx.load(path).graph.input[0].type.tensor_type.shape
    assert [d.dim_value for d in graph_input.dim] == [3, 96, 128]
    onnx_model = OnnxModel(path)
    assert onnx_model.static_size == (96, 128) and onnx_model.max_detections == 16
    image = _image(96, 128)
    ref, out = _reference(model, image), onnx_model(image)
    n = int(out["num_detections"])
    assert out["num_detections"].dtype == np.int64 and 0 < n == len(ref) < 16
    assert out["boxes"].shape == (16, 4) and out["masks"].shape == (16, 96, 128)
    assert np.abs(out["boxes"][:n] - ref.pred_boxes.tensor.numpy()).max() <= BOX_ATOL
    assert np.abs(out["scores"][:n] - ref.scores.numpy()).max() <= SCORE_ATOL
    assert mask_ious(out["masks"][:n] > 0.5, ref.pred_masks.numpy()).min() >= MIN_MASK_IOU
    assert not out["boxes"][n:].any() and not out["scores"][n:].any() and not out["masks"][n:].any()
    with pytest.raises(ValueError, match="exported for 96x128"):
        onnx_model(_image(100, 128))


# ---------------------------------------------------------------- the file
@pytest.mark.slow
def test_checker_passes_and_metadata_round_trips(condinst_export):
    cfg, _, path = condinst_export
    onnx.checker.check_model(path)
    m = OnnxModel(path)
    assert m.version == "1" and m.meta_architecture == "CondInst"
    assert m.class_names == class_names_of(cfg, cfg.MODEL.FCOS.NUM_CLASSES)
    assert m.class_names[:2] == ["ellipse", "triangle"]  # the shapes dataset of DATASETS.TEST
    assert (m.input_format, m.min_size_test, m.max_size_test) == (cfg.INPUT.FORMAT, cfg.INPUT.MIN_SIZE_TEST,
                                                                 cfg.INPUT.MAX_SIZE_TEST)
    assert m.config == cfg.dump() and m.static_size is None and m.max_detections is None
    assert m.output_names == ["boxes", "scores", "classes", "masks"] == m.metadata["outputs"]
    assert [f for f in os.listdir(os.path.dirname(path)) if f != "model.onnx"] == []  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # readable like any file written there


@pytest.mark.slow
def test_onnx_model_takes_arrays_and_float_images(condinst_export):
    _, _, path = condinst_export
    m = OnnxModel(path)
    image = _image(100, 150)
    a, b, c = m(image), m(image.numpy()), m(image.float())
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], c[k])
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        m(image.permute(1, 2, 0).numpy())
