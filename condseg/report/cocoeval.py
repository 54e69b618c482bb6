"""The one pycocotools evaluation per iou type that every item of the report reads.

It is detectron2's evaluation (``COCOEvaluator``: ``loadRes``, ``COCOeval``, the same
image ids and detections per image, no ``bbox`` in the results of ``"segm"``) with two
changes that leave its numbers as they are: only the ``"all"`` area range and the last
``maxDets`` are computed (the only ones the report reads), and IoU 0.1 is appended to the
ten IoU thresholds 0.50:0.95 for the error breakdown. ``COCOeval`` matches and
accumulates each threshold on its own, so ``eval["precision"][:10]`` is exactly what
detectron2 reads.
"""
import contextlib
import io
from typing import Dict, List, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

__all__ = ["LOC_IOU", "STANDARD_IOUS", "category_names", "coco_results_for", "evaluate", "iou_index", "quiet"]

STANDARD_IOUS = Params(iouType="bbox").iouThrs  # 0.50:0.05:0.95, pycocotools' own array
LOC_IOU = 0.1  # the localisation threshold of COCO's error analysis


def quiet():
    """A context in which pycocotools' progress prints go nowhere."""
    return contextlib.redirect_stdout(io.StringIO())


def coco_results_for(results: Sequence[Dict], iou_type: str) -> List[Dict]:
    """Fresh copies of COCO result dicts for ``loadRes`` (which writes into them); without
    ``bbox`` for ``"segm"``, so that areas are mask areas, as in detectron2's evaluation."""
    if iou_type == "segm":
        return [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    return [dict(r) for r in results]


def evaluate(coco_gt: COCO, results: Sequence[Dict], iou_type: str, img_ids: Optional[Sequence[int]] = None,
             max_dets: int = 100) -> COCOeval:
    """``COCOeval`` of ``results`` (COCO result dicts with dataset category ids) against
    ``coco_gt`` for ``iou_type`` (``"bbox"`` or ``"segm"``), evaluated and accumulated.

    ``eval["precision"]`` is ``(11, 101, K, 1, 1)``: IoU thresholds 0.50:0.95 then
    :data:`LOC_IOU`, 101 recall thresholds, the K categories of ``coco_gt`` in id order,
    area "all", at most ``max_dets`` detections per image and category.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    with quiet():
        coco_dt = coco_gt.loadRes(coco_results_for(results, iou_type))
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        p = coco_eval.params
        p.iouThrs = np.append(STANDARD_IOUS, LOC_IOU)
        p.areaRng, p.areaRngLbl = p.areaRng[:1], p.areaRngLbl[:1]
        p.maxDets = [int(max_dets)]
        if img_ids is not None:
            p.imgIds = list(img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def iou_index(coco_eval: COCOeval, iou: float) -> int:
    """Index of the IoU threshold ``iou`` in ``coco_eval.params.iouThrs``."""
    hits = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, iou))
    if hits.size == 0:
        raise ValueError(f"IoU {iou} is not among the evaluated thresholds {list(coco_eval.params.iouThrs)}")
    return int(hits[0])


def category_names(coco_gt: COCO) -> List[str]:
    """Category names in id order: the order of ``COCOeval``'s category axis and of
    detectron2's ``thing_classes``."""
    return [coco_gt.cats[c]["name"] for c in sorted(coco_gt.getCatIds())]
