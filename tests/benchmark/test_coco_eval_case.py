"""condseg.benchmark.coco_eval: both COCO APIs timed on tiny cached sets, the same AP."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest

from condseg.benchmark import CASES, coco_eval
from condseg.benchmark.harness import measure, merge_rounds, table


def test_both_backends_measured_on_both_sets_with_the_same_ap(tmp_path, monkeypatch):
    """Both sets made once (asking again reuses the files), every spec measured: each phase's
    seconds and the AP, the same AP for both backends, and a speed-up against pycocotools."""
    monkeypatch.chdir(tmp_path)  # the shapes split under datasets/, the caches under output/benchmark
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    monkeypatch.setattr(coco_eval, "NUM_IMAGES", {"shapes-val": 2, "synthetic": 3})
    monkeypatch.setattr(coco_eval, "DETECTIONS", 20)
    specs = coco_eval.plan(["cpu", "cuda"])
    assert [(s["data"], s["mode"], s["impl"]) for s in specs] == [
        (d, m, i) for d in ("shapes-val", "synthetic") for m in ("bbox", "segm")
        for i in ("pycocotools", "faster_coco_eval")]
    assert {s["device"] for s in specs} == {"cpu"} and {s["detections"] for s in specs} == {20}
    files = sorted({s["dt_file"] for s in specs} | {s["gt_file"] for s in specs})
    assert len(files) == 4 and all(os.path.isfile(f) for f in files)
    assert sum(f.startswith(os.path.join("output", "benchmark", "coco_eval")) for f in files) == 3
    mtimes = [os.path.getmtime(f) for f in files]
    again = [coco_eval.prepare(d, n, 20) for d, n in coco_eval.NUM_IMAGES.items()]  # cached: not made again
    assert again == [[s["gt_file"], s["dt_file"]] for s in specs[::4]]
    assert [os.path.getmtime(f) for f in files] == mtimes
    with open(specs[-1]["dt_file"]) as f:
        assert len(json.load(f)) == 3 * 20

    rows = [merge_rounds([measure(coco_eval.CASE, s, repeats=1, warmup=0)]) for s in specs]
    for ref, ours in zip(rows[::2], rows[1::2]):
        assert 0 < ref["metrics"]["AP"] < 100 and ours["metrics"]["AP"] == pytest.approx(ref["metrics"]["AP"], abs=1e-4)
        assert ours["metrics"]["evaluate s"] > 0 and ours["median_s"] > 0
    for r in rows:
        r["max_abs_diff"] = None
    text = table(coco_eval.CASE, rows)
    assert "| evaluate s | accumulate s | summarize s | AP |" in text
    assert "| cpu | segm | synthetic | 3 | 20 | faster_coco_eval |" in text and "x |" in text
    assert CASES["coco-eval"] is coco_eval.CASE and coco_eval.CASE.baseline == "pycocotools"
    with pytest.raises(SystemExit, match="CPU only"):
        coco_eval.plan(["cuda"])


def test_synthetic_set_is_coco_like_and_deterministic():
    """COCO's 80 categories, ~7.3 instances per image, some crowds, objects of all three COCO
    sizes; the same set from the same seed, another from another."""
    h, w = coco_eval.SYNTHETIC_SIZE
    data = coco_eval.synthetic_dataset(150, h, w)
    anns = data["annotations"]
    assert [c["id"] for c in data["categories"]] == sorted(c["id"] for c in data["categories"])
    assert len(data["categories"]) == 80 and data["categories"][-1]["id"] == 90
    assert 6.5 < len(anns) / 150 < 8.1
    assert 0 < sum(a["iscrowd"] for a in anns) < 0.05 * len(anns)
    areas = np.array([a["area"] for a in anns])
    for lo, hi in ((0, 32**2), (32**2, 96**2), (96**2, np.inf)):
        assert 0.15 < ((areas >= lo) & (areas < hi)).mean() < 0.6
    assert coco_eval.synthetic_dataset(5, h, w) == coco_eval.synthetic_dataset(5, h, w)
    assert coco_eval.synthetic_dataset(5, h, w, seed=1) != coco_eval.synthetic_dataset(5, h, w)


def test_jittered_detections_find_most_objects_among_false_positives():
    """``num`` detections of the image's size; copies of most objects (best IoU spread over
    COCO's thresholds), scored above most false positives."""
    h, w = 480, 640
    rng = np.random.default_rng(0)
    truth = [(1, coco_eval.star_polygon(rng, 100 + 100 * k, 200, 60, h, w)) for k in range(5)]
    dets = coco_eval.jittered_detections(truth, h, w, [1, 2, 3], np.random.default_rng(1), num=50)
    assert len(dets) == 50 and all(d["segmentation"]["size"] == [h, w] and 0 <= d["score"] <= 1 for d in dets)
    gt = mask_util.frPyObjects([p for _, p in truth], h, w)
    best = mask_util.iou([d["segmentation"] for d in dets], gt, [0] * len(gt)).max(1)
    found = best > 0.5
    assert 3 <= found.sum() <= 15 and best[found].min() < 0.75 < best[found].max()
    assert np.median([d["score"] for d, f in zip(dets, found) if f]) > np.median([d["score"] for d in dets])
