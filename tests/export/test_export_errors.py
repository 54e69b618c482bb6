"""condseg.export refuses what it cannot export, with a message naming the config key or
option, and writes nothing then; OnnxModel refuses files that are not condseg exports;
tools/export_model.py fails in one line with exit status 1."""
import os

import onnx
import pytest
import torch
from detectron2.modeling import build_model

from condseg.config_setup import setup_cfg
from condseg.export import ExportableModel, ExportError, NotAnExportError, OnnxModel, export_onnx
from condseg.export.metadata import class_names_of
from builders.tools import load_tool

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
export_tool = load_tool("export_model")


def test_mask_rcnn_is_refused_and_nothing_is_written(tmp_path):
    cfg = setup_cfg(os.path.join(ROOT, "configs", "quickstart", "mask_rcnn_R18_shapes.yaml"))
    path = tmp_path / "m.onnx"
    message = "MODEL.META_ARCHITECTURE GeneralizedRCNN: only condseg's FCOSDetector and CondInst export"
    with pytest.raises(ExportError, match=message):
        export_onnx(cfg, str(path))
    with pytest.raises(ExportError, match=message):
        ExportableModel(build_model(cfg))
    assert list(tmp_path.iterdir()) == []


def test_unexportable_options_name_the_key(condinst_cfg, quickstart_cfg, tmp_path):
    path = str(tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="MODEL.WEIGHTS"):
        export_onnx(condinst_cfg("MODEL.WEIGHTS", "w.pth"), path)
    dcn = quickstart_cfg("condinst_R18_dcnv2_shapes.yaml")
    with pytest.raises(ExportError, match="opset 18: MODEL.RESNETS.DEFORM_ON_PER_STAGE"):
        export_onnx(build_model(dcn), path, cfg=dcn, opset=18)
    cfg = condinst_cfg()
    model = build_model(cfg)
    with pytest.raises(ExportError, match="static_size"):
        export_onnx(model, path, cfg=cfg, static_size=(0, 64))
    with pytest.raises(ExportError, match="max_detections"):
        export_onnx(model, path, cfg=cfg, max_detections=0)
    with pytest.raises(ExportError, match="MODEL.FCOS.PRE_NMS_TOPK_TEST"):
        cfg0 = condinst_cfg("MODEL.FCOS.PRE_NMS_TOPK_TEST", "0")
        export_onnx(build_model(cfg0), path, cfg=cfg0)
    with pytest.raises(ExportError, match="needs cfg="):
        export_onnx(model, path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_writes_nothing(condinst_cfg, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("the exporter gave up\nsecond line")

    monkeypatch.setattr(torch.onnx, "export", fail)
    cfg = condinst_cfg()
    with pytest.raises(ExportError, match="CondInst: the export failed: the exporter gave up$"):
        export_onnx(build_model(cfg), str(tmp_path / "m.onnx"), cfg=cfg)
    assert list(tmp_path.iterdir()) == []


def test_onnx_model_refuses_files_that_are_not_exports(tmp_path):
    other = tmp_path / "other.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph), str(other))
    with pytest.raises(NotAnExportError, match=f"{other}: not a condseg export"):
        OnnxModel(str(other))
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(NotAnExportError, match=f"{text}: not an ONNX file"):
        OnnxModel(str(text))
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxModel(str(tmp_path / "missing.onnx"))


def test_class_names_fall_back_to_ids(condinst_cfg):
    assert class_names_of(condinst_cfg("DATASETS.TEST", "('not_registered',)"), 4) == ["0", "1", "2", "3"]
    assert class_names_of(condinst_cfg("DATASETS.TEST", "()"), 2) == ["0", "1"]


def test_tool_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    config = os.path.join(ROOT, "configs", "quickstart", "mask_rcnn_R18_shapes.yaml")
    assert export_tool.main(["--config-file", config, "--output", out]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: MODEL.META_ARCHITECTURE GeneralizedRCNN: only condseg's FCOSDetector and CondInst export"
    )
    fcos = os.path.join(ROOT, "configs", "quickstart", "fcos_R18_shapes.yaml")
    assert export_tool.main(["--config-file", fcos, "--output", out, "--static-size", "96by128"]) == 1
    assert capsys.readouterr().err.strip().startswith("error: --static-size 96by128: expected HxW")
    assert export_tool.main(["--config-file", fcos, "--output", out, "MODEL.WEIGHTS"]) == 1
    assert "KEY VALUE pairs" in capsys.readouterr().err
    assert export_tool.main(["--config-file", fcos, "--output", out, "MODEL.WEIGHTS", str(tmp_path / "no.pth")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not os.path.exists(out)
    assert export_tool.parse_size("800x1216") == (800, 1216)
