"""condseg.export.metadata: an export's class names are those its weights were trained on
when their checkpoint has them, else the config's dataset's."""

import pytest

from condseg.checkpoint.classes import KEY, read_entry
from condseg.config_setup import setup_cfg
from condseg.data import SHAPES_CLASSES
from condseg.export import OnnxModel
from condseg.export.metadata import WEIGHTS_CLASSES, export_metadata, parse_metadata
from condseg.inference import Predictor
from builders.classes import QUIRKY_CLASSES
from builders.tools import load_tool

PADDED = QUIRKY_CLASSES + ["4", "5", "6", "7"]  # the quickstart CondInst has 8 classes, the json 4
LINE = ("the weights were trained on 4 classes (circle, square, triangle, hexagon); the config's dataset "
        "condseg_shapes_val has 8")


def _metadata(cfg, classes=None):
    return parse_metadata(export_metadata(cfg, "CondInst", 8, ("boxes", "scores", "classes", "masks"), "uint8",
                                          None, None, classes=classes))


def test_names_come_from_the_weights_entry_else_from_the_config(named_tiny_model):
    config, _, entry = named_tiny_model
    cfg = setup_cfg(config)
    with_entry = _metadata(cfg, entry)
    assert with_entry["class_names"] == PADDED
    assert read_entry({KEY: with_entry[WEIGHTS_CLASSES]}, "file.onnx") == entry  # ids survive JSON
    without = _metadata(cfg)  # old and converted checkpoints
    assert without["class_names"] == list(SHAPES_CLASSES) and WEIGHTS_CLASSES not in without


@pytest.mark.slow
def test_the_tool_exports_the_weights_names_and_the_predictor_reads_them(named_tiny_model, tmp_path, condseg_log):
    tool = load_tool("export_model")
    config, weights, entry = named_tiny_model
    path = str(tmp_path / "named.onnx")
    # a static size only to export faster
    assert tool.main(["--config-file", config, "--output", path, "--static-size", "128x192",
                      "MODEL.WEIGHTS", weights]) == 0
    assert f"{weights}: {LINE}" in condseg_log.text and "writing the weights' names into the file" in condseg_log.text
    assert OnnxModel(path).class_names == PADDED
    predictor = Predictor.from_onnx(path)
    assert predictor.class_names == PADDED and predictor.dataset_ids == [3, 7, 42, 99, 100, 101, 102, 103]
    assert f"{path}: {LINE}" in condseg_log.text
