"""COCO's error breakdown (Lin et al., "Microsoft COCO", 2014, and the analysis on
cocodataset.org/#detection-eval): precision-recall curves and AP per category after each
kind of error is forgiven in turn,

* C75, C50: PR at IoU 0.75 and 0.5;
* Loc: PR at IoU 0.1 (localisation errors forgiven, duplicates not);
* Sim: PR at IoU 0.1 with the detections on ground truth of a *similar* class (the same
  supercategory) forgiven;
* Oth: the same with the ground truth of *any* other class;
* BG: all remaining false positives (background) forgiven: precision 1 up to the recall
  Oth reaches;
* FN: the ground truth no detection finds forgiven too: precision 1 at every recall.

Sim and Oth are COCO's re-evaluation of each category with the other classes' ground truth
turned into crowd regions of that category: a detection no ground truth of its class takes
is ignored when it covers such a region (intersection over the detection's area >= 0.1).
That re-evaluation would compute every cross-class IoU again in a new ``COCOeval``; here
it is done on the IoU-0.1 matching of the report's one ``COCOeval`` (which crowd regions
cannot change: a detection takes a regular ground truth before a crowd region), by marking
those detections ignored and accumulating again with ``COCOeval.accumulate``. The tests
check it against the literal re-evaluation.
"""
import copy
from dataclasses import dataclass
from typing import Dict, List, Sequence, Set

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .cocoeval import LOC_IOU, iou_index, quiet
from .figures import panel_grid, save_png, with_legend

__all__ = ["ERROR_TYPES", "ErrorBreakdown", "confusion_forgiven_precision", "draw_error_breakdown",
           "error_breakdown", "similar_categories"]

ERROR_TYPES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
COLORS = ("#1b4f9c", "#3f7fd0", "#8cb8ea", "#5fbf6a", "#f2d14b", "#f0913a", "#d9483b")


@dataclass
class ErrorBreakdown:
    """``precision (7, K, R)`` per error type (:data:`ERROR_TYPES`) and category, nan for a
    category without ground truth; ``ap (7, K)`` in percent; ``mean_precision (7, R)`` and
    ``mean_ap (7,)`` over the categories with ground truth; ``recall (R,)``; ``note`` says
    how Sim's similar classes were chosen."""

    precision: np.ndarray
    ap: np.ndarray
    mean_precision: np.ndarray
    mean_ap: np.ndarray
    recall: np.ndarray
    note: str


def similar_categories(coco_gt: COCO):
    """``({category id: ids of the other categories of its supercategory}, note)``.

    Without a supercategory (the field missing or empty, as in datasets converted from
    detectron2's dicts), a category has no similar class: Sim then forgives nothing (Sim
    equals Loc) and all class confusion shows in Oth, rather than guessing which classes
    look alike.
    """
    cats = [coco_gt.cats[c] for c in sorted(coco_gt.getCatIds())]
    supers = {c["id"]: (c.get("supercategory") or "").strip() for c in cats}
    similar = {i: {j for j, sj in supers.items() if j != i and s and sj == s} for i, s in supers.items()}
    named = sorted({s for s in supers.values() if s})
    if not named:
        note = ("The categories have no supercategory: no class counts as similar to another, so Sim forgives "
                "nothing (Sim = Loc) and every class confusion shows in Oth.")
    elif len(named) == 1 and all(supers.values()):
        note = (f"All categories share the supercategory '{named[0]}': every other class counts as similar, so "
                "Sim = Oth.")
    else:
        missing = [c["name"] for c in cats if not supers[c["id"]]]
        note = f"Similar classes are those of the same supercategory ({', '.join(named)})."
        if missing:
            note += f" Without a supercategory, {', '.join(missing)} have no similar class."
    return similar, note


def _geometry(ann: Dict, iou_type: str):
    return ann["bbox"] if iou_type == "bbox" else ann["segmentation"]  # RLE once COCOeval has prepared it


def confusion_forgiven_precision(coco_eval: COCOeval, confusable: Dict[int, Set[int]]) -> np.ndarray:
    """``(R, K)`` precision at IoU 0.1 (area "all", the last maxDets) after ignoring each
    detection that matched nothing at IoU 0.1 and covers a ground truth (crowd or not) of a
    class in ``confusable[its category id]`` by at least 0.1 of its area.

    ``coco_eval`` is the report's evaluation (:func:`condseg.report.cocoeval.evaluate`);
    entries are -1 for a category without ground truth.
    """
    p = coco_eval.params
    t = iou_index(coco_eval, LOC_IOU)
    iou_type = p.iouType
    entries = []
    for e in coco_eval.evalImgs:
        if e is None:
            entries.append(None)
            continue
        matches, ignore = e["dtMatches"][t : t + 1], e["dtIgnore"][t : t + 1].astype(bool)
        free = np.flatnonzero((matches[0] == 0) & ~ignore[0])
        others = [g for c in confusable.get(e["category_id"], ()) for g in coco_eval._gts[e["image_id"], c]]
        if free.size and others:
            dts = [_geometry(coco_eval.cocoDt.anns[e["dtIds"][i]], iou_type) for i in free]
            regions = mask_util.iou(dts, [_geometry(g, iou_type) for g in others], [1] * len(others))
            covered = np.asarray(regions, dtype=float).reshape(len(dts), len(others)).max(axis=1) >= LOC_IOU
            ignore = ignore.copy()
            ignore[0, free[covered]] = True
        entries.append({"dtScores": e["dtScores"], "dtMatches": matches, "dtIgnore": ignore,
                        "gtIgnore": e["gtIgnore"]})
    forgiving = copy.copy(coco_eval)  # shares the ground truth, detections and _paramsEval
    forgiving.evalImgs = entries
    forgiving.params = copy.deepcopy(p)
    forgiving.params.iouThrs = np.array([LOC_IOU])
    with quiet():
        forgiving.accumulate()
    return forgiving.eval["precision"][0, :, :, 0, -1]


def _ap(precision: np.ndarray) -> np.ndarray:
    """AP in percent over the last axis (R); nan where the curve is nan."""
    return 100.0 * precision.mean(axis=-1)


def error_breakdown(coco_eval: COCOeval, coco_gt: COCO) -> ErrorBreakdown:
    """The curves and APs of :data:`ERROR_TYPES` for every category of ``coco_eval`` (the
    report's evaluation, which holds IoU 0.75, 0.5 and 0.1)."""
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # (T, R, K)
    similar, note = similar_categories(coco_gt)
    all_others = {c: set(coco_gt.getCatIds()) - {c} for c in coco_gt.getCatIds()}
    curves = [precision[iou_index(coco_eval, 0.75)], precision[iou_index(coco_eval, 0.5)],
              precision[iou_index(coco_eval, LOC_IOU)],
              confusion_forgiven_precision(coco_eval, similar), confusion_forgiven_precision(coco_eval, all_others)]
    curves = np.stack(curves).transpose(0, 2, 1)  # (5, K, R)
    absent = curves[0] <= -1  # (K, R): a category without ground truth
    oth = np.where(absent, 0.0, curves[4])
    bg = (oth > 0).astype(float)
    fn = np.ones_like(bg)
    curves = np.concatenate([np.where(curves <= -1, np.nan, curves), bg[None], fn[None]])
    curves[:, absent] = np.nan
    present = ~absent.all(axis=1)
    mean = curves[:, present].mean(axis=1) if present.any() else np.full(curves[:, 0].shape, np.nan)
    return ErrorBreakdown(precision=curves, ap=_ap(curves), mean_precision=mean, mean_ap=_ap(mean),
                          recall=np.asarray(coco_eval.params.recThrs, dtype=float), note=note)


def _panel(ax, recall: np.ndarray, curves: np.ndarray, ap: np.ndarray, title: str, legend: bool) -> None:
    if np.all(np.isnan(curves)):
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", color="gray")
    else:
        lower = np.zeros_like(recall)
        for i, name in enumerate(ERROR_TYPES):
            upper = np.maximum(curves[i], lower)  # each curve bounds the one before
            ax.fill_between(recall, lower, upper, color=COLORS[i], lw=0, label=f"[{ap[i] / 100:.3f}] {name}")
            lower = upper
        if legend:
            ax.legend(loc="lower left", fontsize=6.5, framealpha=0.85, handlelength=1.0, borderpad=0.3,
                      labelspacing=0.2)
    ax.set_title(title, fontsize=9)


def draw_error_breakdown(breakdown: ErrorBreakdown, names: Sequence[str], path: str, title: str = "") -> str:
    """COCO's analysis figure: a panel per category (the first: the mean over categories)
    of the stacked areas between the curves C75 <= C50 <= ... <= FN, AP in the legend;
    written to ``path`` (PNG)."""
    panels: List = [("all categories (mean)", breakdown.mean_precision, breakdown.mean_ap)]
    panels += [(n, breakdown.precision[:, k], breakdown.ap[:, k]) for k, n in enumerate(names)]
    fig, axes = panel_grid(len(panels), 2.8, 2.6, title, "recall", "precision")
    for i, ((name, curves, ap), ax) in enumerate(zip(panels, axes)):
        _panel(ax, breakdown.recall, curves, ap, name, with_legend(i, len(panels)))
    return save_png(fig, path)
