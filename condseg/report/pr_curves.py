"""Precision-recall curves per category at IoU 0.5 and 0.75: COCO's interpolated
precision at its 101 recall thresholds (``COCOeval.eval["precision"]``), and their figure."""
import warnings
from typing import Sequence, Tuple

import numpy as np
from pycocotools.cocoeval import COCOeval

from .cocoeval import iou_index
from .figures import panel_grid, save_png, with_legend

__all__ = ["draw_pr_curves", "pr_curves"]


def pr_curves(coco_eval: COCOeval, ious: Sequence[float] = (0.5, 0.75)) -> Tuple[np.ndarray, np.ndarray]:
    """``(recall (R,), precision (len(ious), K, R))``: the recall thresholds and COCO's
    precision at each of them per IoU and category (nan for a category without ground
    truth; 0 past the largest recall reached)."""
    precision = coco_eval.eval["precision"][[iou_index(coco_eval, t) for t in ious], :, :, 0, -1]  # (I, R, K)
    precision = np.where(precision > -1, precision, np.nan).transpose(0, 2, 1)
    return np.asarray(coco_eval.params.recThrs, dtype=float), precision


def draw_pr_curves(recall: np.ndarray, precision: np.ndarray, ious: Sequence[float], names: Sequence[str],
                   path: str, title: str = "") -> str:
    """One panel per category (the first: the mean over categories, whose area is COCO's
    AP at that IoU), a curve per IoU, AP in the legend; written to ``path`` (PNG).

    Args:
        recall: ``(R,)``; precision: ``(I, K, R)`` from :func:`pr_curves`; ious: the I IoUs;
        names: the K category names.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a recall level no category has: nan, drawn as a gap
        mean = np.nanmean(precision, axis=1)
    panels = [("all categories (mean)", mean)] + [(n, precision[:, k]) for k, n in enumerate(names)]
    fig, axes = panel_grid(len(panels), 2.8, 2.4, title, "recall", "precision")
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    for i, ((name, curves), ax) in enumerate(zip(panels, axes)):
        for j, t in enumerate(ious):
            if not np.all(np.isnan(curves[j])):
                ax.plot(recall, curves[j], color=colors[j % len(colors)], lw=1.6,
                        label=f"IoU {t:.2f}: AP {100 * np.mean(curves[j]):.1f}")
        if np.all(np.isnan(curves)):
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", color="gray")
        elif with_legend(i, len(panels)):
            ax.legend(loc="lower left", fontsize=7, frameon=False)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    return save_png(fig, path)
