"""Shared test builders: tiny configs, model inputs with ground truth, the reference fixtures."""
import logging
import os

import condseg  # noqa: F401  (first: registers condseg's components and keeps detectron2's import quiet)
import pytest
import torch
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks

from condseg.config import get_condseg_cfg

FIXTURES = os.environ.get(
    "CONDSEG_FIXTURES", os.path.join(os.path.dirname(__file__), "fixtures")
)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart")
# a ResNet-18 with a 16-channel stem and res2: the slim backbone of every tiny model
TINY_BACKBONE = ["MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16"]
TINY_FCOS = [*TINY_BACKBONE, "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.FCOS.NUM_CLS_CONVS", "1",
             "MODEL.FCOS.NUM_BOX_CONVS", "1", "MODEL.FCOS.NUM_CLASSES", "4"]
TINY_CONDINST = [
    "MODEL.META_ARCHITECTURE", "CondInst", "MODEL.MASK_ON", "True", *TINY_FCOS,
    "MODEL.FPN.OUT_CHANNELS", "64",  # 2 channels per GroupNorm group, also on a 1x1 P7
    "MODEL.CONDINST.MASK_BRANCH.CHANNELS", "32", "MODEL.CONDINST.MASK_BRANCH.NUM_CONVS", "1",
]


def _quickstart_cfg(name: str, *opts):
    cfg = get_condseg_cfg()
    cfg.merge_from_file(os.path.join(QUICKSTART, name))
    cfg.merge_from_list([*TINY_BACKBONE, *opts])
    return cfg


@pytest.fixture(scope="session")
def quickstart_cfg():
    """``quickstart_cfg(name, *opts)``: ``configs/quickstart/<name>`` on the slim backbone."""
    return _quickstart_cfg


@pytest.fixture(scope="session")
def fcos_cfg():
    """``fcos_cfg(*opts)``: a tiny FCOS detector (4 classes, one conv per tower)."""
    return lambda *opts: _quickstart_cfg("fcos_R18_shapes.yaml", *TINY_FCOS, *opts)


@pytest.fixture(scope="session")
def condinst_cfg():
    """``condinst_cfg(*opts)``: a tiny CondInst on the tiny FCOS."""
    return lambda *opts: _quickstart_cfg("fcos_R18_shapes.yaml", *TINY_CONDINST, *opts)


def _gt_inputs(n: int = 2, h: int = 96, w: int = 160, masks: str = "polygons"):
    inputs = []
    for _ in range(n):
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor([[8.0, 10.0, 40.0, 50.0], [30.0, 20.0, 110.0, 90.0]]))
        inst.gt_classes = torch.tensor([1, 3])
        if masks == "polygons":
            inst.gt_masks = PolygonMasks([[[8, 10, 40, 10, 40, 50, 8, 50]], [[30, 20, 110, 20, 70, 90]]])
        elif masks == "bitmasks":
            m = torch.zeros(2, h, w, dtype=torch.bool)
            m[0, 10:50, 8:40] = True
            m[1, 20:90, 30:110] = True
            inst.gt_masks = BitMasks(m)
        inputs.append({"image": torch.rand(3, h, w) * 255, "instances": inst, "height": 2 * h, "width": 2 * w})
    return inputs


@pytest.fixture(scope="session")
def gt_inputs():
    """``gt_inputs(n=2, h=96, w=160, masks="polygons" | "bitmasks" | None)``: model inputs of
    random ``(3, h, w)`` images, each with the same two instances (classes 1 and 3), asking
    for outputs at twice the size."""
    return _gt_inputs


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, saying why, on a machine without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def load_fixture(group: str, name: str) -> dict:
    path = os.path.join(FIXTURES, group, name)
    if not os.path.exists(path):
        pytest.fail(f"fixture {path} is missing (set CONDSEG_FIXTURES to the fixtures folder)")
    if name.endswith(".json"):
        import json

        with open(path) as f:
            return json.load(f)
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def fixture():
    return load_fixture


@pytest.fixture(scope="session")
def coco_training(tmp_path_factory):
    """A few iterations of the quickstart CondInst on a 4-class COCO json (ids 3, 7, 42, 99):
    its checkpoints and paths (see tests/builders/classes.py)."""
    from builders.classes import train_on_quirky_coco

    return train_on_quirky_coco(str(tmp_path_factory.mktemp("coco_training")))


@pytest.fixture(scope="session")
def named_tiny_model(tiny_model, tmp_path_factory):
    """(config.yaml, model_final.pth, entry): the weights of :func:`tiny_model` saved again
    by the training's checkpointer with the class entry of the 4-class quirky json."""
    from builders.classes import QUIRKY_CLASSES, QUIRKY_ID_MAP, save_with_classes

    entry = {"thing_classes": QUIRKY_CLASSES, "thing_dataset_id_to_contiguous_id": QUIRKY_ID_MAP,
             "datasets": ["quirky_train"]}
    config, weights = tiny_model
    return config, save_with_classes(config, weights, str(tmp_path_factory.mktemp("named_tiny")), entry), entry


@pytest.fixture
def condseg_log(caplog):
    """caplog attached to the ``condseg`` logger itself (a set-up elsewhere in the session
    may have turned off its propagation to the root logger), each record once."""
    from builders.logs import caplog_on

    with caplog_on(caplog, "condseg", logging.INFO):
        yield caplog


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(config.yaml, model.pth) of a tiny CondInst whose masks are diamonds around its
    detections (see tests/builders/tiny_model.py)."""
    from builders.tiny_model import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny_model")))


def _export_tiny(tiny_model, tmp_path_factory, *options) -> str:
    """The tiny model of :func:`tiny_model` exported by tools/export_model.py: its path."""
    from condseg.export import ExportableModel  # noqa: F401  (fails here, not in the tool, if export is broken)

    from builders.tools import load_tool

    tool = load_tool("export_model")
    config, weights = tiny_model
    path = str(tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx")
    assert tool.main(["--config-file", config, "--output", path, *options, "MODEL.WEIGHTS", weights]) == 0
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory):
    """The tiny model of :func:`tiny_model` exported by tools/export_model.py (masks at the
    input's size): its path."""
    return _export_tiny(tiny_model, tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_onnx_stride(tiny_model, tmp_path_factory):
    """:func:`tiny_onnx` exported with ``--mask-resolution stride``: its path."""
    return _export_tiny(tiny_model, tmp_path_factory, "--mask-resolution", "stride")
