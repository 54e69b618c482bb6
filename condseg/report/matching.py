"""Detections above a score matched to the ground truth of their image, for the confusion
matrix and the gallery: first each detection to a ground truth of its own class (COCO's
greedy rule: by descending score, the unmatched one of highest IoU >= the threshold), then
the detections left to the ground truth left, of any class (a class confusion), then the
detections still left on a crowd region (left out, as COCO ignores them)."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

__all__ = ["ImageMatch", "greedy_match", "match_dataset", "match_image"]


@dataclass
class ImageMatch:
    """The matching of one image. G ground truth instances (crowd ones excluded), D
    detections above the score; class indices are positions in the sorted category ids."""

    image_id: int
    gt_ann_ids: np.ndarray  # (G,) annotation ids
    gt_classes: np.ndarray  # (G,) class index
    gt_to_dt: np.ndarray  # (G,) index of the matched detection, -1: missed
    dt_results: np.ndarray  # (D,) index of each detection in the results list
    dt_classes: np.ndarray  # (D,) class index
    dt_scores: np.ndarray  # (D,)
    dt_to_gt: np.ndarray  # (D,) index of the matched ground truth, -1: none
    dt_on_crowd: np.ndarray  # (D,) bool: unmatched but on a crowd region (not counted)

    @property
    def gt_found(self) -> np.ndarray:
        """(G,) bool: matched by a detection of its own class."""
        ok = self.gt_to_dt >= 0
        ok[ok] = self.dt_classes[self.gt_to_dt[ok]] == self.gt_classes[ok]
        return ok

    @property
    def dt_correct(self) -> np.ndarray:
        """(D,) bool: matched to a ground truth of its own class."""
        ok = self.dt_to_gt >= 0
        ok[ok] = self.gt_classes[self.dt_to_gt[ok]] == self.dt_classes[ok]
        return ok

    @property
    def num_missed(self) -> int:
        """Ground truth not found by a detection of its class (missed or confused)."""
        return int(np.count_nonzero(~self.gt_found))

    @property
    def num_false_positives(self) -> int:
        """Detections without a ground truth of their class (background or confused)."""
        return int(np.count_nonzero(~self.dt_correct & ~self.dt_on_crowd))


def greedy_match(ious: np.ndarray, allowed: np.ndarray, threshold: float, dt_free: np.ndarray,
                 gt_free: np.ndarray, dt_to_gt: np.ndarray, gt_to_dt: np.ndarray) -> None:
    """One greedy pass, in place: detections in index order (sorted by descending score)
    take the free ground truth of highest IoU >= ``threshold`` among the ``allowed`` pairs.

    Args:
        ious: ``(D, G)``; allowed: ``(D, G)`` bool; dt_free ``(D,)`` / gt_free ``(G,)`` bool,
        dt_to_gt ``(D,)`` / gt_to_dt ``(G,)`` int, all updated.
    """
    for d in np.flatnonzero(dt_free):
        cand = np.where(allowed[d] & gt_free & (ious[d] >= threshold), ious[d], -1.0)
        if cand.size == 0 or cand.max() < 0:
            continue
        g = int(np.argmax(cand))  # the first of equal IoUs, as COCOeval
        dt_to_gt[d], gt_to_dt[g] = g, d
        dt_free[d], gt_free[g] = False, False


def match_image(ious: np.ndarray, crowd_ious: np.ndarray, gt_classes: np.ndarray, dt_classes: np.ndarray,
                threshold: float):
    """Match D detections, sorted by descending score, to G ground truth instances (see the
    module docstring).

    Args:
        ious: ``(D, G)`` IoU; crowd_ious: ``(D, C)`` intersection over the detection's area
            with the C crowd regions; gt_classes ``(G,)``, dt_classes ``(D,)``; threshold: IoU.

    Returns:
        ``(dt_to_gt (D,), gt_to_dt (G,), dt_on_crowd (D,) bool)``, -1 where unmatched.
    """
    num_dt, num_gt = len(dt_classes), len(gt_classes)
    dt_to_gt, gt_to_dt = np.full(num_dt, -1), np.full(num_gt, -1)
    dt_free, gt_free = np.ones(num_dt, bool), np.ones(num_gt, bool)
    if num_dt and num_gt:
        same = dt_classes[:, None] == gt_classes[None, :]
        greedy_match(ious, same, threshold, dt_free, gt_free, dt_to_gt, gt_to_dt)
        greedy_match(ious, np.ones_like(same), threshold, dt_free, gt_free, dt_to_gt, gt_to_dt)
    on_crowd = np.zeros(num_dt, bool)
    if num_dt and crowd_ious.size:
        on_crowd = dt_free & (crowd_ious.max(axis=1) >= threshold)
    return dt_to_gt, gt_to_dt, on_crowd


def _geometry(anns: Sequence[Dict], iou_type: str, coco_gt: Optional[COCO] = None) -> List:
    """What ``pycocotools.mask.iou`` takes: XYWH boxes, or RLEs (ground truth through
    ``coco_gt.annToRLE``, results as they are)."""
    if iou_type == "bbox":
        return [list(a["bbox"]) for a in anns]
    if coco_gt is not None:
        return [coco_gt.annToRLE(a) for a in anns]
    return [a["segmentation"] for a in anns]


def _ious(dts: List, gts: List, crowd: bool) -> np.ndarray:
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    return np.asarray(mask_util.iou(dts, gts, [int(crowd)] * len(gts)), dtype=float).reshape(len(dts), len(gts))


def match_dataset(coco_gt: COCO, results: Sequence[Dict], iou_type: str, iou: float, score_threshold: float,
                  img_ids: Optional[Sequence[int]] = None) -> List[ImageMatch]:
    """:class:`ImageMatch` of every image (``img_ids``, default all of ``coco_gt``, sorted)
    for the detections of ``results`` scoring >= ``score_threshold``, matched at IoU
    ``iou`` with boxes (``"bbox"``) or masks (``"segm"``)."""
    cat_index = {c: k for k, c in enumerate(sorted(coco_gt.getCatIds()))}
    by_image: Dict[int, List[int]] = {}
    for i, r in enumerate(results):
        if r["score"] >= score_threshold:
            by_image.setdefault(r["image_id"], []).append(i)
    matches = []
    for image_id in sorted(coco_gt.getImgIds() if img_ids is None else img_ids):
        anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if a["category_id"] in cat_index]
        gts = [a for a in anns if not a.get("iscrowd", 0)]
        crowds = [a for a in anns if a.get("iscrowd", 0)]
        idx = by_image.get(image_id, [])
        idx = np.asarray(sorted(idx, key=lambda i: -results[i]["score"]), dtype=int)  # stable: ties keep order
        dts = [results[i] for i in idx]
        dt_geo = _geometry(dts, iou_type)
        gt_classes = np.asarray([cat_index[a["category_id"]] for a in gts], dtype=int)
        dt_classes = np.asarray([cat_index.get(d["category_id"], -1) for d in dts], dtype=int)
        dt_to_gt, gt_to_dt, on_crowd = match_image(
            _ious(dt_geo, _geometry(gts, iou_type, coco_gt), crowd=False),
            _ious(dt_geo, _geometry(crowds, iou_type, coco_gt), crowd=True), gt_classes, dt_classes, iou)
        matches.append(ImageMatch(
            image_id=int(image_id), gt_ann_ids=np.asarray([a["id"] for a in gts], dtype=int), gt_classes=gt_classes,
            gt_to_dt=gt_to_dt, dt_results=idx, dt_classes=dt_classes,
            dt_scores=np.asarray([d["score"] for d in dts], dtype=float), dt_to_gt=dt_to_gt, dt_on_crowd=on_crowd))
    return matches
