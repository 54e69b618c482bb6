"""Best-F1 thresholds against a brute force: COCOeval run again on the detections kept by
each threshold."""
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from condseg.report.cocoeval import quiet
from condseg.report.scores import CategoryScores, best_f1_threshold, category_scores, pooled


def counts_above(gt_json, results, threshold):
    """{category id: (TP, FP, #GT)} at IoU 0.5 of a fresh COCOeval of the detections
    scoring >= threshold."""
    gt = COCO(gt_json)
    kept = [{k: v for k, v in r.items() if k != "bbox"} for r in results if r["score"] >= threshold]
    out = {c: [0, 0, 0] for c in gt.getCatIds()}
    if not kept:
        for a in gt.dataset["annotations"]:
            out[a["category_id"]][2] += 1
        return out
    with quiet():
        ev = COCOeval(gt, gt.loadRes(kept), "segm")
        ev.params.iouThrs, ev.params.areaRng, ev.params.maxDets = np.array([0.5]), ev.params.areaRng[:1], [100]
        ev.evaluate()
    for e in ev.evalImgs:
        if e is None:
            continue
        counted = ~e["dtIgnore"][0].astype(bool)
        matched = e["dtMatches"][0] > 0
        c = out[e["category_id"]]
        c[0] += int(np.count_nonzero(counted & matched))
        c[1] += int(np.count_nonzero(counted & ~matched))
        c[2] += int(np.count_nonzero(e["gtIgnore"] == 0))
    return out


def test_best_f1_threshold_is_where_a_brute_force_peaks(synthetic, synthetic_eval):
    scores = category_scores(synthetic_eval("segm"), 0.5)
    cats = sorted(synthetic["coco"].getCatIds())
    grid = sorted({r["score"] for r in synthetic["results"]}) + [1.01]
    table = {t: counts_above(synthetic["json"], synthetic["results"], t) for t in grid}

    def f1(tp, fp, num_gt):
        return 2 * tp / (tp + fp + num_gt)

    for k, cat in enumerate([None, *cats]):
        best = best_f1_threshold(pooled(scores) if cat is None else scores[k - 1])
        curve = []
        for t in grid:
            counts = list(table[t].values()) if cat is None else [table[t][cat]]
            tp, fp, num_gt = (sum(c[i] for c in counts) for i in range(3))
            curve.append(f1(tp, fp, num_gt))
        curve = np.asarray(curve)
        peak = grid[int(np.flatnonzero(curve == curve.max())[-1])]  # the highest threshold of the best F1
        assert best["f1"] == pytest.approx(curve.max(), abs=1e-12), cat
        assert best["threshold"] == peak, cat
        assert best["tp"] + best["fn"] == num_gt  # ground truth does not depend on the threshold


def test_thresholds_are_not_trivial_on_the_synthetic_detections(synthetic, synthetic_eval):
    best = best_f1_threshold(pooled(category_scores(synthetic_eval("segm"), 0.5)))
    lowest = min(r["score"] for r in synthetic["results"])
    assert lowest < best["threshold"] < 1 and 0 < best["f1"] < 1 and best["fp"] > 0 and best["fn"] > 0


def test_best_f1_threshold_edge_cases():
    none = best_f1_threshold(CategoryScores(np.zeros(0), np.array([0.4]), 0))
    assert np.isnan(none["threshold"]) and none["f1"] == 0
    tied = best_f1_threshold(CategoryScores(np.array([0.9, 0.5]), np.array([0.5]), 2))
    # keeping >= 0.9: F1 = 2/3; >= 0.5: 4/5, the tie at 0.5 counted together
    assert tied["threshold"] == 0.5 and tied["f1"] == pytest.approx(0.8) and (tied["tp"], tied["fp"]) == (2, 1)
