"""One picture of a written report, for a README or a message: the precision-recall figure
and the confusion matrix side by side over the first gallery image."""
import os
from typing import List

import cv2
import numpy as np
from PIL import Image

__all__ = ["compose_overview"]


def _read(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"report picture {path} does not exist or cannot be read")
    return image


def _trim(image: np.ndarray, pad: int = 6) -> np.ndarray:
    """``image`` without its white margins (``pad`` px of them kept)."""
    ink = np.flatnonzero((image < 250).any(axis=2).any(axis=1)), np.flatnonzero((image < 250).any(axis=2).any(axis=0))
    if not ink[0].size:
        return image
    (y0, y1), (x0, x1) = (ink[0][[0, -1]]), (ink[1][[0, -1]])
    return image[max(0, y0 - pad):y1 + pad + 1, max(0, x0 - pad):x1 + pad + 1]


def _centred(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` in the middle of a white band ``width`` px wide."""
    left = (width - image.shape[1]) // 2
    band = np.full((image.shape[0], width, 3), 255, np.uint8)
    band[:, left:left + image.shape[1]] = image
    return band


def _to_width(image: np.ndarray, width: int) -> np.ndarray:
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _to_height(image: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def compose_overview(report_dir: str, path: str, iou_type: str = "segm", width: int = 1200,
                     gallery: str = "missed", colors: int = 256, gallery_width: float = 0.75) -> str:
    """Write ``path``: ``{iou_type}_pr_curves.png`` and ``{iou_type}_confusion.png`` of
    ``report_dir`` in one row ``width`` px wide, the first ``gallery`` image ("missed" or
    "false_positives") under them (``gallery_width`` of the width), as a PNG of ``colors``
    colours (small enough for a README). Returns ``path``."""
    pr = _trim(_read(os.path.join(report_dir, f"{iou_type}_pr_curves.png")))
    confusion = _trim(_read(os.path.join(report_dir, f"{iou_type}_confusion.png")))
    row_height = max(pr.shape[0], confusion.shape[0])
    top = np.concatenate([_to_height(pr, row_height), _to_height(confusion, row_height)], axis=1)
    parts: List[np.ndarray] = [_to_width(top, width)]
    shown = os.path.join(report_dir, "gallery", f"{iou_type}_{gallery}_00.png")
    if os.path.isfile(shown):
        parts += [np.full((10, width, 3), 255, np.uint8),
                  _centred(_to_width(_read(shown), round(width * gallery_width)), width)]
    picture = Image.fromarray(cv2.cvtColor(np.concatenate(parts), cv2.COLOR_BGR2RGB))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    picture.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, format="PNG", optimize=True)
    return path
