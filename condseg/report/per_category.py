"""Per-category AP, AP50 and AP75, read from ``COCOeval.eval["precision"]`` as detectron2's
``COCOEvaluator`` reads its per-category table (``results[task]["AP-<name>"]``)."""
from typing import Dict, List

import numpy as np
from pycocotools.cocoeval import COCOeval

from .cocoeval import STANDARD_IOUS, category_names, iou_index

__all__ = ["category_counts", "mean_precision", "per_category_ap"]


def mean_precision(precision: np.ndarray) -> float:
    """Mean of the entries > -1 of a precision array, in percent (nan when none): the
    average detectron2 takes (absent categories hold -1)."""
    valid = precision[precision > -1]
    return float(np.mean(valid) * 100) if valid.size else float("nan")


def category_counts(coco_eval: COCOeval) -> Dict[str, np.ndarray]:
    """``{"gt": (K,), "det": (K,)}``: ground-truth instances that count (not crowd) and
    detections evaluated (at most ``maxDets`` per image) of each category."""
    p = coco_eval.params
    num_images = len(p.imgIds)
    gt, det = np.zeros(len(p.catIds), int), np.zeros(len(p.catIds), int)
    for k in range(len(p.catIds)):
        for e in coco_eval.evalImgs[k * num_images:(k + 1) * num_images]:  # area "all" only
            if e is not None:
                gt[k] += int(np.count_nonzero(e["gtIgnore"] == 0))
                det[k] += len(e["dtIds"])
    return {"gt": gt, "det": det}


def per_category_ap(coco_eval: COCOeval) -> List[Dict]:
    """One row per category (id order): ``name``, ``id``, ``AP`` (IoU 0.50:0.95), ``AP50``,
    ``AP75`` in percent (nan without ground truth), ``gt`` and ``det`` counts; a last row
    ``name="all"`` holds the means over categories (COCO's AP, AP50, AP75)."""
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M)
    standard = [iou_index(coco_eval, t) for t in STANDARD_IOUS]
    i50, i75 = iou_index(coco_eval, 0.5), iou_index(coco_eval, 0.75)
    counts = category_counts(coco_eval)
    names = category_names(coco_eval.cocoGt)
    rows = []
    for k, (cat_id, name) in enumerate(zip(coco_eval.params.catIds, names)):
        rows.append({
            "name": name, "id": int(cat_id),
            "AP": mean_precision(precision[standard, :, k, 0, -1]),
            "AP50": mean_precision(precision[i50, :, k, 0, -1]),
            "AP75": mean_precision(precision[i75, :, k, 0, -1]),
            "gt": int(counts["gt"][k]), "det": int(counts["det"][k]),
        })
    rows.append({
        "name": "all", "id": -1,
        "AP": mean_precision(precision[standard, :, :, 0, -1]),
        "AP50": mean_precision(precision[i50, :, :, 0, -1]),
        "AP75": mean_precision(precision[i75, :, :, 0, -1]),
        "gt": int(counts["gt"].sum()), "det": int(counts["det"].sum()),
    })
    return rows
