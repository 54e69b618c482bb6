"""tools/eval_onnx.py: an exported model's AP on a registered dataset equals the PyTorch
model's (the same evaluator, loader and data)."""
import json

import pytest
from builders.tools import load_tool


DATA = ["DATASETS.SHAPES.NUM_VAL", "8", "DATASETS.SHAPES.MIN_SIZE", "128", "DATASETS.SHAPES.MAX_SIZE", "192"]


def _tool():
    return load_tool("eval_onnx")


@pytest.mark.slow
def test_compare_evaluates_both_and_prints_the_differences(tiny_model, tiny_onnx, tmp_path, monkeypatch, capsys):
    """--compare: the exported model's AP and the PyTorch model's (same evaluator, loader and
    data) within 0.1, and the same detections, one by one."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    out = tmp_path / "eval"
    assert _tool().main(["--model", tiny_onnx, "--output", str(out), "--compare", tiny_model[1], *DATA]) == 0
    printed = capsys.readouterr().out
    assert "| task   | metric" in printed and "| segm   | AP " in printed and "(within --tolerance 0.1)" in printed
    _same_detections(out, out / "pytorch")
    assert _tool().main(["--model", tiny_onnx, "--compare", str(tmp_path / "none.pth")]) == 1


def test_differences_pairs_the_metrics_both_have():
    rows = _tool().differences({"segm": {"AP": 10.0, "AP-a": float("nan"), "APs": 1.0}, "bbox": {"AP": 2.0}},
                               {"segm": {"AP": 10.25, "AP-a": float("nan")}})
    assert rows[0] == ["segm", "AP", 10.0, 10.25, 0.25] and rows[1][:2] == ["segm", "AP-a"] and len(rows) == 2


def _same_detections(onnx_dir, pytorch_dir):
    """The random-weight detector scores little AP: compare what was evaluated, detection by detection."""
    ours, theirs = (_results(d) for d in (onnx_dir, pytorch_dir))
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-2)


def _results(output_dir):
    """The detections COCOEvaluator evaluated, in a fixed order."""
    path = next(output_dir.glob("inference/*/coco_instances_results.json"))
    with open(path) as f:
        records = json.load(f)
    return sorted(records, key=lambda r: (r["image_id"], -r["score"]))
