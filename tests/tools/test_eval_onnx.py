"""tools/eval_onnx.py: an exported model's AP on a registered dataset equals the PyTorch
model's (the same evaluator, loader and data)."""
import importlib.util
import json
import os

import pytest
from detectron2.modeling import build_model

from condseg.config_setup import setup_cfg
from condseg.engine import Trainer
from condseg.inference.predictor import load_weights_strict

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = ["DATASETS.SHAPES.NUM_VAL", "8", "DATASETS.SHAPES.MIN_SIZE", "128", "DATASETS.SHAPES.MAX_SIZE", "192"]


def _tool():
    spec = importlib.util.spec_from_file_location("eval_onnx", os.path.join(ROOT, "tools", "eval_onnx.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_exported_model_ap_equals_the_pytorch_models(tiny_model, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    config, weights = tiny_model
    cfg = setup_cfg(config, [*DATA, "OUTPUT_DIR", str(tmp_path / "pytorch")])
    model = build_model(cfg).eval()
    load_weights_strict(model, weights)
    expected = Trainer.test(cfg, model)
    got = _tool().evaluate(tiny_onnx, str(tmp_path / "onnx"), DATA)
    for task in ("bbox", "segm"):
        for metric, value in expected[task].items():
            assert got[task][metric] == pytest.approx(value, abs=0.1, nan_ok=True), (task, metric)
    # the random-weight detector scores little AP: compare what was evaluated, detection by detection
    ours, theirs = (_results(tmp_path / name) for name in ("onnx", "pytorch"))
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-2)


def _results(output_dir):
    """The detections COCOEvaluator evaluated, in a fixed order."""
    path = next(output_dir.rglob("coco_instances_results.json"))
    with open(path) as f:
        records = json.load(f)
    return sorted(records, key=lambda r: (r["image_id"], -r["score"]))
