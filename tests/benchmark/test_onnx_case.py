"""condseg.benchmark.onnx: eager against ONNX Runtime on the same model, the export cached."""
import os

import pytest

from condseg.benchmark import CASES, onnx
from condseg.benchmark.harness import agreement, measure, merge_rounds, table
from condseg.inference.predictor import load_weights_strict


def test_plan_lists_eager_and_onnxruntime_per_model_and_says_which_weights(tmp_path, monkeypatch):
    """The two models, each with an eager row (the baseline) and two ONNX Runtime rows (masks
    exported at the input's size and at the mask stride);
    without the quickstart checkpoint both run random weights with forced detections.
    Checkpoints and exports are stubbed here (the slow test below makes a real export)."""
    monkeypatch.setattr(onnx, "prepare_in_fresh_process",
                        lambda name, config, weights, opts: [weights or f"{name}.pth", f"{name}.onnx",
                                                             f"{name}-stride.onnx"])
    monkeypatch.setattr(onnx, "MODELS", {k: {**m, "weights": None if m["weights"] is None else str(tmp_path / "no.pth")}
                                         for k, m in onnx.MODELS.items()})
    specs = onnx.plan(["cpu", "cuda"])
    assert [(s["model"], s["impl"]) for s in specs] == [
        (m, impl) for m in ("quickstart-R18", "R50") for impl in ("eager", "onnxruntime", "onnxruntime-stride")]
    assert {s["weights"] for s in specs} == {onnx.RANDOM}
    assert all(s["opts"].endswith(onnx.FORCED) and s["device"] == "cpu" for s in specs)
    assert [s["image"] for s in specs[::3]] == ["640x480", "1333x800"]
    assert specs[3]["opts"].startswith("INPUT.MIN_SIZE_TEST 800 INPUT.MAX_SIZE_TEST 1333")
    assert (specs[1]["onnx_file"], specs[1]["onnx_stride_file"]) == (
        "quickstart-R18.onnx", "quickstart-R18-stride.onnx")
    assert specs[1]["checkpoint"] == "quickstart-R18.pth"
    assert CASES["onnx"] is onnx.CASE and onnx.CASE.baseline == "eager" and not onnx.CASE.stable_malloc
    assert onnx.CASE.size == ("model", "image", "weights")
    with pytest.raises(SystemExit, match="CPU only"):
        onnx.plan(["cuda"])


def test_random_checkpoint_is_written_once_and_fits_its_model(condinst_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(tmp_path / "tiny.yaml")
    with open(config, "w") as f:
        f.write(condinst_cfg().dump())
    path = onnx.random_checkpoint("tiny", config, onnx.FORCED)
    mtime = os.path.getmtime(path)
    assert onnx.random_checkpoint("tiny", config, onnx.FORCED) == path and os.path.getmtime(path) == mtime
    assert onnx.random_checkpoint("tiny", config, "") != path  # keyed by the overrides
    from detectron2.modeling import build_model

    load_weights_strict(build_model(onnx._cfg(config, onnx.FORCED)), path)  # raises on a partial fit


@pytest.mark.slow
def test_tiny_model_both_backends_measured_and_compared(tiny_model, tmp_path, monkeypatch):
    """A tiny CondInst exported once (preparing it again reuses the file); both backends return
    images/s and detections per image, and agree on the scores of the same images."""
    monkeypatch.chdir(tmp_path)  # the case caches under output/benchmark
    config, weights = tiny_model
    monkeypatch.setattr(onnx, "MODELS", {
        "tiny": {"config": config, "weights": weights, "image": "96x64", "num_images": 2, "opts": ""}})
    specs = onnx.plan(["cpu"])
    assert [s["weights"] for s in specs] == [onnx.TRAINED] * 3 and specs[0]["checkpoint"] == weights
    files = [specs[1]["onnx_file"], specs[1]["onnx_stride_file"]]
    assert len(set(files)) == 2
    mtimes = [os.path.getmtime(f) for f in files]
    assert {os.path.dirname(f) for f in files} == {os.path.join("output", "benchmark", "onnx")}
    assert onnx.prepare("tiny", config, weights, "") == [weights, *files]  # cached, not redone
    assert [os.path.getmtime(f) for f in files] == mtimes

    rows = [merge_rounds([measure(onnx.CASE, s, repeats=1, warmup=0)]) for s in specs]
    for r in rows:
        assert r["metrics"]["images/s"] > 0 and r["metrics"]["detections/image"] > 0
    assert len({r["metrics"]["detections/image"] for r in rows}) == 1
    diffs = agreement(onnx.CASE, specs)
    assert diffs[0] == 0.0 and max(diffs[1:]) < 1e-4, diffs
    for r, d in zip(rows, diffs):
        r["max_abs_diff"] = d
    text = table(onnx.CASE, rows)
    assert "images/s |" in text and "detections/image |" in text
    assert f"| cpu | infer | tiny | 96x64 | {onnx.TRAINED} | onnxruntime |" in text
    assert f"| cpu | infer | tiny | 96x64 | {onnx.TRAINED} | onnxruntime-stride |" in text
