"""The evaluation report: every item of the package for each iou type, written with its
``index.html`` into one folder (built beside it and renamed into place)."""
import logging
import math
import os
import shutil
from typing import Callable, Dict, Optional, Sequence

from detectron2.config import configurable
from pycocotools.coco import COCO
from tqdm import tqdm

from . import html
from .cocoeval import category_names, evaluate
from .confusion import confusion_matrix, draw_confusion
from .error_analysis import ERROR_TYPES, draw_error_breakdown, error_breakdown
from .gallery import write_gallery
from .inputs import image_finder, iou_types_of, load_results
from .matching import match_dataset
from .per_category import per_category_ap
from .pr_curves import draw_pr_curves, pr_curves
from .scores import best_f1_threshold, category_scores, draw_score_histograms, pooled
from .tables import write_csv

__all__ = ["RESULTS_FILE", "write_report", "write_report_of_evaluator"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "coco_instances_results.json"  # what detectron2's COCOEvaluator writes into its output folder
LABELS = {"bbox": "Boxes (bbox)", "segm": "Masks (segm)"}
PR_IOUS = (0.5, 0.75)
F1_IOU = 0.5


def _rounded_down(threshold: float) -> float:
    """``threshold`` to 3 decimals, rounded down so that it keeps the detection it was
    computed at."""
    return math.floor(threshold * 1000 + 1e-9) / 1000  # + 1e-9: 0.447 * 1000 is 446.99999999999994


def _shown(threshold: float) -> str:
    """A threshold as the command line takes it (:func:`_rounded_down`), "-" for none."""
    return "-" if math.isnan(threshold) else f"{_rounded_down(threshold):.3f}"


def _per_category(coco_eval, names, folder: str, t: str) -> str:
    rows = per_category_ap(coco_eval)
    write_csv(os.path.join(folder, f"{t}_per_category.csv"), ["category", "id", "AP", "AP50", "AP75", "gt", "det"],
              [[r[k] for k in ("name", "id", "AP", "AP50", "AP75", "gt", "det")] for r in rows])
    recall, precision = pr_curves(coco_eval, PR_IOUS)
    draw_pr_curves(recall, precision, PR_IOUS, names, os.path.join(folder, f"{t}_pr_curves.png"),
                   title=f"{LABELS[t]}: precision-recall per category")
    return html.per_category_block(rows, f"{t}_per_category.csv") + html.pr_block(f"{t}_pr_curves.png")


def _thresholds(coco_eval, names, folder: str, t: str):
    """(html, the best-F1 threshold over all categories)."""
    scores = category_scores(coco_eval, F1_IOU)
    best = [best_f1_threshold(pooled(scores))] + [best_f1_threshold(s) for s in scores]
    table = [{"name": n, "shown": _shown(b["threshold"]), **b} for n, b in zip(["all categories", *names], best)]
    write_csv(os.path.join(folder, f"{t}_thresholds.csv"),
              ["category", "threshold", "f1", "precision", "recall", "tp", "fp", "fn"],
              [[r[k] for k in ("name", "threshold", "f1", "precision", "recall", "tp", "fp", "fn")] for r in table])
    draw_score_histograms(scores, [b["threshold"] for b in best], names, os.path.join(folder, f"{t}_scores.png"),
                          iou=F1_IOU, title=f"{LABELS[t]}: scores at IoU {F1_IOU:g}")
    return html.threshold_block(table, f"{t}_scores.png", f"{t}_thresholds.csv", F1_IOU), best[0]["threshold"]


def _confusion(matches, names, folder: str, t: str, iou: float, score: str, chosen: bool) -> str:
    matrix = confusion_matrix(matches, len(names))
    write_csv(os.path.join(folder, f"{t}_confusion.csv"), ["ground truth \\ detected", *names, "missed"],
              [[n, *map(int, matrix[i])] for i, n in enumerate([*names, "background"])])
    draw_confusion(matrix, names, os.path.join(folder, f"{t}_confusion.png"),
                   title=f"{LABELS[t]}: IoU >= {iou:g}, score >= {score}")
    on_crowd = sum(int(m.dt_on_crowd.sum()) for m in matches)
    return html.confusion_block(f"{t}_confusion.png", f"{t}_confusion.csv", iou, score, int(matrix[:-1].sum()),
                                int(matrix[:, :-1].sum()) + on_crowd, on_crowd, chosen=chosen)


def _errors(coco_eval, coco_gt: COCO, names, folder: str, t: str) -> str:
    breakdown = error_breakdown(coco_eval, coco_gt)
    write_csv(os.path.join(folder, f"{t}_errors.csv"), ["category", *ERROR_TYPES],
              [[n, *breakdown.ap[:, k]] for k, n in enumerate(names)] + [["all (mean)", *breakdown.mean_ap]])
    draw_error_breakdown(breakdown, names, os.path.join(folder, f"{t}_errors.png"),
                         title=f"{LABELS[t]}: COCO error breakdown")
    return html.error_block(breakdown, names, f"{t}_errors.png", f"{t}_errors.csv")


def _section(coco_gt: COCO, results: Sequence[Dict], t: str, folder: str, progress, *, img_ids, iou: float,
             score_threshold: float, gallery_images: int, max_dets: int, image_path) -> str:
    """Write the files of iou type ``t`` into ``folder``; returns its html."""
    names = category_names(coco_gt)

    def step(following: str) -> None:
        progress.update()
        progress.set_description(f"report {t}: {following}")

    progress.set_description(f"report {t}: COCOeval")
    coco_eval = evaluate(coco_gt, results, t, img_ids=img_ids, max_dets=max_dets)
    step("AP and PR curves")
    per_category = _per_category(coco_eval, names, folder, t)
    step("scores")
    thresholds, best = _thresholds(coco_eval, names, folder, t)
    chosen = score_threshold < 0
    if chosen:  # the best F1 over all categories (0 when there is none), as the table shows it
        score_threshold = _rounded_down(best) if math.isfinite(best) else 0.0
    label = f"{score_threshold:.3f}" if chosen else f"{score_threshold:g}"
    step("confusion")
    matches = match_dataset(coco_gt, results, t, iou, score_threshold, img_ids=img_ids)
    confusion = _confusion(matches, names, folder, t, iou, label, chosen)
    step("error breakdown")
    errors = _errors(coco_eval, coco_gt, names, folder, t)
    step("gallery")
    shown = write_gallery(matches, coco_gt, results, t, names, image_path, os.path.join(folder, "gallery"), t,
                          gallery_images, label)
    gallery = html.gallery_block(shown, f"matched with {'masks' if t == 'segm' else 'boxes'} at IoU >= {iou:g}")
    progress.update()
    return "\n".join([per_category, confusion, errors, thresholds, gallery])


def _report_options(cfg) -> Dict:
    r = cfg.TEST.REPORT
    return {"iou": r.IOU, "score_threshold": r.SCORE_THRESHOLD, "gallery_images": r.GALLERY_IMAGES,
            "max_dets": cfg.TEST.DETECTIONS_PER_IMAGE}


def _check_replaceable(output_dir: str) -> None:
    """Only an earlier report (or an empty folder) is replaced."""
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or (
            os.listdir(output_dir) and not os.path.isfile(os.path.join(output_dir, "index.html")))):
        raise FileExistsError(f"{output_dir} exists and is not a report folder (no index.html): not replacing it")


def _replace_folder(tmp: str, output_dir: str) -> None:
    _check_replaceable(output_dir)
    if os.path.isdir(output_dir):
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)


@configurable(from_config=_report_options)
def write_report(coco_gt: COCO, results: Sequence[Dict], output_dir: str, *, title: str = "Evaluation report",
                 source: str = "", image_path: Optional[Callable[[int], Optional[str]]] = None,
                 img_ids: Optional[Sequence[int]] = None, iou_types: Optional[Sequence[str]] = None,
                 iou: float = 0.5, score_threshold: float = -1.0, gallery_images: int = 4,
                 max_dets: int = 100) -> str:
    """Write the report of ``results`` (COCO result dicts, dataset category ids) against
    ``coco_gt`` into ``output_dir`` (replacing an earlier report there); returns the path
    of its ``index.html``. ``write_report(cfg, coco_gt=..., results=..., output_dir=...)``
    takes the options from ``TEST.REPORT`` and ``TEST.DETECTIONS_PER_IMAGE``.

    Args:
        title, source: the page's heading and where the results came from (shown).
        image_path: ``image_id -> file`` for the gallery (default: the json's file names).
        img_ids: the images evaluated (default: all of ``coco_gt``).
        iou_types: ``"bbox"`` / ``"segm"`` (default: what the results and ground truth have).
        iou, score_threshold: matching of the confusion matrix and the gallery (a negative
            score_threshold: the best-F1 threshold over all categories of each iou type).
        gallery_images: images of each gallery (most missed, most false positives).
        max_dets: detections per image evaluated (``TEST.DETECTIONS_PER_IMAGE``).
    """
    iou_types = list(iou_types if iou_types is not None else iou_types_of(results, coco_gt))
    if not results or not iou_types:
        raise ValueError(f"no detections to report on{' in ' + source if source else ''}")
    image_path = image_path or image_finder(coco_gt)
    output_dir = os.path.abspath(output_dir)
    _check_replaceable(output_dir)
    tmp = f"{output_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        sections = []
        with tqdm(total=6 * len(iou_types), unit="step", disable=None) as progress:
            for t in iou_types:
                content = _section(coco_gt, results, t, tmp, progress, img_ids=img_ids, iou=iou,
                                   score_threshold=score_threshold, gallery_images=gallery_images, max_dets=max_dets,
                                   image_path=image_path)
                sections.append((t, LABELS[t], content))
        images = set(coco_gt.getImgIds() if img_ids is None else img_ids)
        num_gt = sum(1 for a in coco_gt.dataset.get("annotations", [])
                     if not a.get("iscrowd", 0) and a["image_id"] in images)
        summary = [("results", source or "-"), ("images", len(images)), ("ground-truth instances (not crowd)", num_gt),
                   ("detections", len(results)), ("categories", len(coco_gt.getCatIds())),
                   ("confusion matrix and gallery",
                    f"IoU >= {iou:g}, score >= " + (f"{score_threshold:g}" if score_threshold >= 0 else
                                                    "the best-F1 threshold of all categories")),
                   ("detections per image evaluated", max_dets)]
        with open(os.path.join(tmp, "index.html"), "w") as f:
            f.write(html.page(title, summary, sections))
        _replace_folder(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(output_dir, "index.html")


def write_report_of_evaluator(cfg, dataset_name: str, evaluator) -> Optional[str]:
    """After ``inference_on_dataset`` with a detectron2 ``COCOEvaluator`` that has an output
    folder: the report of its ``coco_instances_results.json`` into ``<folder>/report``, on
    the images it evaluated, with its ground truth; the path of ``index.html``. None when
    ``TEST.REPORT.ENABLED`` is off, the evaluator is of another kind, there are no
    detections, or the report fails (a warning with the error: the evaluation stands)."""
    from detectron2.evaluation import COCOEvaluator

    folder = getattr(evaluator, "_output_dir", None)
    if not cfg.TEST.REPORT.ENABLED or not isinstance(evaluator, COCOEvaluator) or not folder:
        return None
    results_file = os.path.join(folder, RESULTS_FILE)
    # _results: what this evaluation computed, set only when it had detections (else a results
    # file in the folder is an earlier evaluation's)
    if not getattr(evaluator, "_results", None) or not os.path.isfile(results_file):
        logger.warning("no evaluation report of %s: the evaluation had no detections to write into %s",
                       dataset_name, results_file)
        return None
    try:
        results = load_results(results_file)
        coco_gt = evaluator._coco_api
        left_out = {i for i, _ in getattr(evaluator, "left_out", [])}  # unreadable images (condseg's evaluator)
        img_ids = [i for i in coco_gt.getImgIds() if i not in left_out] if left_out else None
        possible = iou_types_of(results, coco_gt)
        iou_types = [t for t in (evaluator._tasks or possible) if t in possible]
        image_root = evaluator._metadata.get("image_root", "")
        return write_report(cfg, coco_gt=coco_gt, results=results, output_dir=os.path.join(folder, "report"),
                            title=f"Evaluation report of {dataset_name}", source=results_file,
                            image_path=image_finder(coco_gt, image_root), img_ids=img_ids, iou_types=iou_types)
    except Exception:
        logger.exception("could not write the evaluation report of %s (the evaluation results stand)", dataset_name)
        return None
