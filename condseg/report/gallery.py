"""The images with the most missed and the most false-positive instances, drawn as ground
truth next to the detections (with the project's renderer, :mod:`condseg.inference.render`).

Only the few images shown are read and drawn, so the cost does not grow with the dataset.
"""
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

from condseg.inference.render import draw_instances

from .matching import ImageMatch

__all__ = ["FOUND", "CONFUSED", "WRONG", "draw_comparison", "worst_images", "write_gallery"]

logger = logging.getLogger(__name__)

FOUND, CONFUSED, WRONG = (60, 170, 40), (0, 150, 255), (50, 40, 220)  # BGR: right, other class, missed / background
MIN_SIDE, MAX_SIDE = 384, 512  # bounds of the longest side of one drawn half


def worst_images(matches: Sequence[ImageMatch], count: int) -> Dict[str, List[ImageMatch]]:
    """``{"missed": ..., "false_positives": ...}``: up to ``count`` images each with the
    most ground truth not found by a detection of its class, and with the most detections
    not on a ground truth of their class (ties: lower image id first; images without any
    left out)."""
    out = {}
    for kind, key in (("missed", lambda m: m.num_missed), ("false_positives", lambda m: m.num_false_positives)):
        ranked = sorted((m for m in matches if key(m) > 0), key=lambda m: (-key(m), m.image_id))
        out[kind] = ranked[: max(0, int(count))]
    return out


def _header(width: int, text: str) -> np.ndarray:
    bar = np.full((22, width, 3), 245, np.uint8)
    cv2.putText(bar, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (30, 30, 30), 1, cv2.LINE_AA)
    return bar


def _scaled(image: np.ndarray, inst: Dict, scale: float):
    """``image`` and the instances' boxes and masks resized by ``scale``."""
    if scale == 1:
        return image, inst
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = dict(inst)
    if inst.get("boxes") is not None:
        out["boxes"] = np.asarray(inst["boxes"], float) * scale
    if inst.get("masks") is not None:
        resized = [cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in inst["masks"]]
        out["masks"] = np.stack(resized).astype(bool) if resized else np.zeros((0, size[1], size[0]), bool)
    return image, out


def draw_comparison(image: np.ndarray, gt: Dict, dt: Dict, gt_title: str = "ground truth",
                    dt_title: str = "detections") -> np.ndarray:
    """Ground truth (left) next to detections (right), each half drawn with its longest
    side between ``MIN_SIDE`` and ``MAX_SIDE`` px (small images are enlarged so that the
    labels do not cover them).

    Args:
        image: ``(H, W, 3)`` uint8 BGR.
        gt, dt: ``{"boxes": (N, 4) XYXY or None, "masks": (N, H, W) bool or None,
            "labels": N strings, "colors": N BGR tuples}``.

    Returns:
        ``(h, 2 w + 4, 3)`` uint8 BGR with a title bar over each half.
    """
    longest = max(image.shape[:2])
    scale = min(max(1.0, MIN_SIDE / longest), MAX_SIDE / longest)
    halves = []
    for inst, title in ((gt, gt_title), (dt, dt_title)):
        scaled_image, scaled = _scaled(image, inst, scale)
        drawn = draw_instances(scaled_image, scaled.get("boxes"), scaled.get("masks"), scaled["labels"],
                               scaled["colors"])
        halves.append(np.concatenate([_header(drawn.shape[1], title), drawn]))
    gap = np.full((halves[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([halves[0], gap, halves[1]], axis=1)


def _instances(anns: List[Dict], masks_of: Callable, iou_type: str, labels: List[str], colors: List) -> Dict:
    if iou_type == "segm":
        masks = np.stack([masks_of(a) for a in anns]).astype(bool) if anns else None
        return {"boxes": None, "masks": masks, "labels": labels, "colors": colors}
    boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], float).reshape(-1, 4)
    return {"boxes": boxes, "masks": None, "labels": labels, "colors": colors}


def _panel(match: ImageMatch, image: np.ndarray, coco_gt: COCO, results: Sequence[Dict], iou_type: str,
           names: Sequence[str], score_label: str) -> np.ndarray:
    gts = [coco_gt.anns[int(i)] for i in match.gt_ann_ids]
    gt_colors = [FOUND if ok else (CONFUSED if d >= 0 else WRONG) for ok, d in zip(match.gt_found, match.gt_to_dt)]
    gt_labels = [names[c] for c in match.gt_classes]
    keep = ~match.dt_on_crowd
    dts = [results[int(i)] for i in match.dt_results[keep]]
    dt_colors = [FOUND if ok else (CONFUSED if g >= 0 else WRONG)
                 for ok, g in zip(match.dt_correct[keep], match.dt_to_gt[keep])]
    dt_labels = [f"{names[c]} {100 * s:.0f}%" for c, s in zip(match.dt_classes[keep], match.dt_scores[keep])]
    h, w = image.shape[:2]
    return draw_comparison(
        image,
        _instances(gts, lambda a: coco_gt.annToMask(a), iou_type, gt_labels, gt_colors),
        _instances(dts, lambda r: mask_util.decode(r["segmentation"])[:h, :w], iou_type, dt_labels, dt_colors),
        gt_title=f"ground truth: {match.num_missed} not found",
        dt_title=f"detections >= {score_label}: {match.num_false_positives} false",
    )


def _read(path: Optional[str], height: int, width: int) -> Optional[np.ndarray]:
    image = cv2.imread(path, cv2.IMREAD_COLOR) if path else None
    if image is None:
        logger.warning("evaluation report: cannot read image %s, left out of the gallery", path)
        return None
    if image.shape[:2] != (height, width):  # annotations are in the json's size
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image


def write_gallery(matches: Sequence[ImageMatch], coco_gt: COCO, results: Sequence[Dict], iou_type: str,
                  names: Sequence[str], image_path: Callable[[int], Optional[str]], out_dir: str, prefix: str,
                  count: int, score_label: str) -> Dict[str, List[Dict]]:
    """Draw the :func:`worst_images` into ``out_dir`` as ``{prefix}_{kind}_{rank}.png``
    (``score_label``: the score threshold of the matches, as the titles show it).

    Returns:
        ``{kind: [{"file", "image_id", "file_name", "missed", "false_positives"}, ...]}``,
        ``file`` relative to ``out_dir``'s parent (the report folder).
    """
    os.makedirs(out_dir, exist_ok=True)
    shown: Dict[str, List[Dict]] = {}
    for kind, picked in worst_images(matches, count).items():
        shown[kind] = []
        for rank, match in enumerate(picked):
            info = coco_gt.imgs[match.image_id]
            image = _read(image_path(match.image_id), int(info["height"]), int(info["width"]))
            if image is None:
                continue
            name = f"{prefix}_{kind}_{rank:02d}.png"
            cv2.imwrite(os.path.join(out_dir, name),
                        _panel(match, image, coco_gt, results, iou_type, names, score_label))
            shown[kind].append({"file": f"{os.path.basename(out_dir)}/{name}", "image_id": match.image_id,
                                "file_name": info.get("file_name", ""), "missed": match.num_missed,
                                "false_positives": match.num_false_positives})
    return shown
