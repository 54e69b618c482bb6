"""The confusion matrix between categories, with a "background" row (detections that
match no ground truth) and a "missed" column (ground truth that no detection matches),
from :mod:`condseg.report.matching`; and its figure."""
from typing import Sequence

import numpy as np

from .figures import new_figure, save_png
from .matching import ImageMatch

__all__ = ["confusion_matrix", "draw_confusion"]


def confusion_matrix(matches: Sequence[ImageMatch], num_classes: int) -> np.ndarray:
    """``(K + 1, K + 1)`` int counts: row = ground-truth class, last row "background";
    column = detected class, last column "missed". Rows 0..K-1 add up to the ground-truth
    instances of each class, columns 0..K-1 to the detections of each class above the
    score (those left on crowd regions excepted: see ``ImageMatch.dt_on_crowd``)."""
    k = num_classes
    matrix = np.zeros((k + 1, k + 1), dtype=np.int64)
    for m in matches:
        matched = m.gt_to_dt >= 0
        np.add.at(matrix, (m.gt_classes[matched], m.dt_classes[m.gt_to_dt[matched]]), 1)
        np.add.at(matrix, (m.gt_classes[~matched], k), 1)
        background = (m.dt_to_gt < 0) & ~m.dt_on_crowd
        np.add.at(matrix, (k, m.dt_classes[background]), 1)
    return matrix


def draw_confusion(matrix: np.ndarray, names: Sequence[str], path: str, title: str = "") -> str:
    """The matrix as an image coloured by the fraction of its row (a class's ground truth,
    or the background detections), with the counts written in when there are at most 30
    classes; written to ``path`` (PNG)."""
    k = len(names)
    rows = matrix.sum(axis=1, keepdims=True)
    fraction = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    side = min(max(5.0, 0.5 * (k + 1) + 2.0), 30.0)
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the row")
    ax.set_xticks(range(k + 1), [*names, "missed"], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k + 1), [*names, "background"], fontsize=8)
    ax.set_xlabel("detected as")
    ax.set_ylabel("ground truth")
    ax.axhline(k - 0.5, color="gray", lw=0.8)
    ax.axvline(k - 0.5, color="gray", lw=0.8)
    if k + 1 <= 31:
        for (i, j), count in np.ndenumerate(matrix):
            if count or (i < k and j < k and i == j):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if fraction[i, j] > 0.55 else "black")
    if title:
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.2, right=0.86, bottom=0.2, top=0.93)
    return save_png(fig, path)
