"""A picture of a generated split: a grid of its first images with their masks."""
from __future__ import annotations

import json
import os
from typing import Dict, List

import cv2
import numpy as np
import pycocotools.mask as mask_util

from .classes import SHAPES_CLASSES, SHAPES_COLORS

__all__ = ["draw_preview"]


def draw_preview(json_file: str, num: int = 8, columns: int = 4, cell: int = 240) -> np.ndarray:
    """A BGR grid of the first ``num`` images of a generated split with their masks:
    class-coloured overlay, white contours and class names. Each cell is ``cell`` px."""
    with open(json_file) as f:
        coco = json.load(f)
    image_root = os.path.join(os.path.dirname(json_file), "images")
    by_image: Dict[int, List[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    cells = []
    for info in coco["images"][:num]:
        image = cv2.imread(os.path.join(image_root, info["file_name"]))
        cells.append(_draw_instances(image, by_image.get(info["id"], []), cell))
    while len(cells) % columns:
        cells.append(np.zeros_like(cells[0]))
    rows = [np.concatenate(cells[i:i + columns], axis=1) for i in range(0, len(cells), columns)]
    return np.concatenate(rows, axis=0)


# Not detectron2's Visualizer: at this cell size it clips labels at the cell border and its
# class-coloured outlines hide the boundary between touching shapes; white contours do not.
def _draw_instances(image: np.ndarray, anns: List[dict], cell: int) -> np.ndarray:
    """(H, W, 3) BGR uint8 -> (cell, cell, 3): the image scaled to fit (black padding), its
    instances (COCO annotations) drawn on it."""
    h, w = image.shape[:2]
    k = cell / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    labels = []
    for ann in anns:
        mask = mask_util.decode(ann["segmentation"])
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST).astype(bool)
        rgb = SHAPES_COLORS[ann["category_id"] - 1]
        out[mask] = 0.6 * out[mask] + 0.4 * np.array(rgb[::-1], np.float32)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
        x, y = ann["bbox"][0] * k, ann["bbox"][1] * k
        labels.append((SHAPES_CLASSES[ann["category_id"] - 1], (int(x), max(int(y) - 2, 8))))
    out = np.clip(out, 0, 255).astype(np.uint8)
    for text, org in labels:  # on top of every mask
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1, cv2.LINE_AA)
    canvas = np.zeros((cell, cell, 3), np.uint8)
    canvas[:out.shape[0], :out.shape[1]] = out
    return canvas
