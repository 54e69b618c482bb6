"""COCO's error breakdown: order, agreement with COCOeval, and the confusion-forgiving
re-evaluation against its literal form (other classes' ground truth as crowd regions)."""
import copy

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from condseg.report.cocoeval import evaluate
from condseg.report.error_analysis import ERROR_TYPES, error_breakdown, similar_categories
from condseg.report.per_category import per_category_ap


def literal_forgiven_precision(gt_json, results, iou_type, confusable):
    """(R, K) precision at IoU 0.1 of each category re-evaluated with the ground truth of
    the classes ``confusable[category]`` copied in as crowd regions of that category."""
    gt = COCO(gt_json)
    anns = [dict(a) for a in gt.dataset["annotations"]]
    next_id = max(a["id"] for a in anns) + 1
    for a in list(anns):
        for cat in gt.getCatIds():
            if a["category_id"] in confusable[cat]:
                anns.append({**copy.deepcopy(a), "id": next_id, "category_id": cat, "iscrowd": 1})
                next_id += 1
    crowded = COCO()
    crowded.dataset = {**gt.dataset, "annotations": anns}
    crowded.createIndex()
    dets = [{k: v for k, v in r.items() if not (iou_type == "segm" and k == "bbox")} for r in results]
    ev = COCOeval(crowded, crowded.loadRes(dets), iou_type)
    ev.params.iouThrs = np.array([0.1])
    ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = ev.params.areaRng[:1], ["all"], [100]
    ev.evaluate()
    ev.accumulate()
    return ev.eval["precision"][0, :, :, 0, 0]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_forgiving_confusion_equals_the_literal_reevaluation(synthetic, synthetic_eval, iou_type):
    coco_eval = synthetic_eval(iou_type)
    breakdown = error_breakdown(coco_eval, coco_eval.cocoGt)
    similar, _ = similar_categories(coco_eval.cocoGt)
    cats = coco_eval.params.catIds
    others = {c: set(cats) - {c} for c in cats}
    for row, confusable in ((ERROR_TYPES.index("Sim"), similar), (ERROR_TYPES.index("Oth"), others)):
        expected = literal_forgiven_precision(synthetic["json"], synthetic["results"], iou_type, confusable)
        np.testing.assert_array_equal(breakdown.precision[row], expected.T)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_breakdown_is_monotone_and_starts_at_cocos_ap75_ap50(synthetic_eval, iou_type):
    coco_eval = synthetic_eval(iou_type)
    breakdown = error_breakdown(coco_eval, coco_eval.cocoGt)
    rows = per_category_ap(coco_eval)
    assert breakdown.ap.shape == (len(ERROR_TYPES), len(rows) - 1)
    for k, r in enumerate(rows[:-1]):
        ap = breakdown.ap[:, k]
        assert np.all(np.diff(ap) >= -1e-9), (r["name"], dict(zip(ERROR_TYPES, ap)))
        assert ap[ERROR_TYPES.index("C75")] == pytest.approx(r["AP75"], abs=1e-9)
        assert ap[ERROR_TYPES.index("C50")] == pytest.approx(r["AP50"], abs=1e-9)
        assert ap[-1] == 100.0
    assert np.all(np.diff(breakdown.precision, axis=0) >= -1e-12)  # the curves too, pointwise
    # every kind of error of the synthetic detections costs something in some category
    gains = np.diff(breakdown.ap, axis=0).max(axis=1)
    assert np.all(gains > 0), dict(zip(ERROR_TYPES[1:], gains))
    assert breakdown.mean_ap[1] == pytest.approx(rows[-1]["AP50"], abs=1e-9)


def _with_supercategories(gt_json, value):
    coco = COCO(gt_json)
    dataset = copy.deepcopy(coco.dataset)
    for c in dataset["categories"]:
        if value is None:
            c.pop("supercategory", None)
        else:
            c["supercategory"] = value
    out = COCO()
    out.dataset = dataset
    out.createIndex()
    return out


def test_without_supercategories_sim_forgives_nothing_and_with_one_sim_is_oth(synthetic):
    none = _with_supercategories(synthetic["json"], None)
    breakdown = error_breakdown(evaluate(none, synthetic["results"], "bbox"), none)
    sim, loc, oth = (ERROR_TYPES.index(n) for n in ("Sim", "Loc", "Oth"))
    np.testing.assert_array_equal(breakdown.precision[sim], breakdown.precision[loc])
    assert "no supercategory" in breakdown.note
    one = _with_supercategories(synthetic["json"], "shape")
    breakdown = error_breakdown(evaluate(one, synthetic["results"], "bbox"), one)
    np.testing.assert_array_equal(breakdown.precision[sim], breakdown.precision[oth])
    assert "'shape'" in breakdown.note
    assert similar_categories(COCO(synthetic["json"]))[1].startswith("Similar classes are those of the same")
