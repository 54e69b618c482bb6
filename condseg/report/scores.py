"""Scores of the true and false positives at IoU 0.5 per category, from COCOeval's
per-image matching (``evalImgs``: ``dtMatches``, ``dtScores``, ``dtIgnore``,
``gtIgnore``), and the score threshold that maximises F1; their figure."""
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

from .cocoeval import iou_index
from .figures import panel_grid, save_png, with_legend

__all__ = ["CategoryScores", "best_f1_threshold", "category_scores", "draw_score_histograms", "pooled"]


@dataclass
class CategoryScores:
    """``tp (n,)`` and ``fp (m,)`` scores of the detections that are, and are not, matched
    at the IoU (ignored ones, on crowd regions, left out); ``num_gt`` ground truth that
    counts."""

    tp: np.ndarray
    fp: np.ndarray
    num_gt: int


def category_scores(coco_eval: COCOeval, iou: float = 0.5) -> List[CategoryScores]:
    """:class:`CategoryScores` per category (id order) at IoU ``iou`` (area "all", at most
    ``maxDets`` detections per image)."""
    t = iou_index(coco_eval, iou)
    num_images = len(coco_eval.params.imgIds)
    out = []
    for k in range(len(coco_eval.params.catIds)):
        tp, fp, num_gt = [], [], 0
        for e in coco_eval.evalImgs[k * num_images:(k + 1) * num_images]:
            if e is None:
                continue
            scores = np.asarray(e["dtScores"], dtype=float)
            counted = ~np.asarray(e["dtIgnore"][t], dtype=bool)
            matched = np.asarray(e["dtMatches"][t]) > 0
            tp.append(scores[counted & matched])
            fp.append(scores[counted & ~matched])
            num_gt += int(np.count_nonzero(e["gtIgnore"] == 0))
        out.append(CategoryScores(np.concatenate(tp) if tp else np.zeros(0), np.concatenate(fp) if fp else np.zeros(0),
                                  num_gt))
    return out


def pooled(scores: Sequence[CategoryScores]) -> CategoryScores:
    """All categories together (one threshold for every class, as the demo's
    ``--confidence-threshold``)."""
    return CategoryScores(np.concatenate([s.tp for s in scores]) if scores else np.zeros(0),
                          np.concatenate([s.fp for s in scores]) if scores else np.zeros(0),
                          sum(s.num_gt for s in scores))


def best_f1_threshold(s: CategoryScores) -> Dict[str, float]:
    """The score threshold (keep detections scoring >= it) of the highest F1 = 2TP / (2TP +
    FP + FN), the highest such score when several tie; with F1, precision, recall and the
    TP / FP / FN counts there. Without ground truth or detections: threshold nan, F1 0.

    The candidates are the detections' own scores: between two of them the counts, hence
    F1, do not change.
    """
    scores = np.concatenate([s.tp, s.fp])
    is_tp = np.concatenate([np.ones(len(s.tp), bool), np.zeros(len(s.fp), bool)])
    empty = {"threshold": float("nan"), "f1": 0.0, "precision": float("nan"), "recall": 0.0,
             "tp": 0, "fp": int(len(s.fp)), "fn": int(s.num_gt)}
    if scores.size == 0 or s.num_gt == 0:
        return empty
    order = np.argsort(-scores, kind="mergesort")
    scores, is_tp = scores[order], is_tp[order]
    tp, fp = np.cumsum(is_tp), np.cumsum(~is_tp)
    last = np.r_[scores[1:] != scores[:-1], True]  # the last detection of each distinct score
    tp, fp, thresholds = tp[last], fp[last], scores[last]
    f1 = 2.0 * tp / (tp + fp + s.num_gt)
    best = int(np.flatnonzero(f1 == f1.max())[0])  # thresholds descend: the first is the highest
    n_tp, n_fp = int(tp[best]), int(fp[best])
    return {"threshold": float(thresholds[best]), "f1": float(f1[best]),
            "precision": n_tp / (n_tp + n_fp), "recall": n_tp / s.num_gt,
            "tp": n_tp, "fp": n_fp, "fn": int(s.num_gt - n_tp)}


def draw_score_histograms(scores: Sequence[CategoryScores], thresholds: Sequence[float], names: Sequence[str],
                          path: str, iou: float = 0.5, title: str = "", bins: int = 20) -> str:
    """Stacked histograms of the true / false positive scores, a panel per category (the
    first: all together), the best-F1 threshold as a dashed line; written to ``path`` (PNG).

    Args:
        scores: K :class:`CategoryScores`; thresholds: K + 1 thresholds (all first, then
        per category; nan for none); names: the K category names.
    """
    panels = [("all categories", pooled(scores))] + list(zip(names, scores))
    everything = np.concatenate([np.concatenate([s.tp, s.fp]) for _, s in panels])
    lo, hi = min(0.0, float(everything.min(initial=0.0))), max(1.0, float(everything.max(initial=1.0)))
    edges = np.linspace(lo, hi, bins + 1)
    fig, axes = panel_grid(len(panels), 2.8, 2.2, title, f"score (IoU {iou:g})", "detections", unit_axes=False)
    for i, (((name, s), thr), ax) in enumerate(zip(zip(panels, thresholds), axes)):
        tp, fp = np.histogram(s.tp, edges)[0], np.histogram(s.fp, edges)[0]
        ax.stairs(tp, edges, fill=True, color="#2ca02c", label=f"true positives ({len(s.tp)})")
        ax.stairs(tp + fp, edges, baseline=tp, fill=True, color="#d62728", label=f"false positives ({len(s.fp)})")
        if np.isfinite(thr):
            ax.axvline(thr, color="black", ls="--", lw=1.0, label=f"best F1 at {thr:.3f}")
        ax.set_title(f"{name} ({s.num_gt} GT)", fontsize=9)
        ax.set_xlim(lo, hi)
        if with_legend(i, len(panels)):
            ax.legend(fontsize=6.5, frameon=False, loc="upper right")
    return save_png(fig, path)
