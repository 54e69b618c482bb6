"""COCO evaluation that goes on past images it cannot read.

detectron2's test loader stops at the first image that cannot be read, with no results
at all. Here the mapper's :class:`~condseg.data.UnreadableImage` becomes a marker that
:class:`SkippingLoader` drops (naming the file), and :class:`SkippingCOCOEvaluator`
evaluates the other images only (``COCOEvaluator.evaluate(img_ids=...)``), saying how
many were left out.

The COCO API that computes AP is ``TEST.COCO_EVAL_BACKEND`` (:func:`cocoeval_class`):
pycocotools (detectron2's own evaluation, the default) or faster_coco_eval, a C++
reimplementation of ``COCOeval`` (see docs/BENCHMARKS.md, "coco-eval", for the speed and
the AP equality checks).
"""
import itertools
import json
import logging
import os
from typing import Dict, Iterator, List, Optional, Sequence

from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from condseg.data import UnreadableImage

__all__ = ["COCO_EVAL_BACKENDS", "MarkUnreadable", "SkippingCOCOEvaluator", "SkippingLoader", "cocoeval_class",
           "evaluate_on_coco"]

logger = logging.getLogger("condseg")

COCO_EVAL_BACKENDS = ("pycocotools", "faster_coco_eval")  # the values of TEST.COCO_EVAL_BACKEND
FASTER_COCO_EVAL = "faster-coco-eval==1.8.0"  # the pin of requirements.txt, for the install hint


def cocoeval_class(backend: str):
    """The ``COCOeval`` class of a ``TEST.COCO_EVAL_BACKEND`` value: pycocotools'
    ``COCOeval`` or ``faster_coco_eval.COCOeval_faster`` (same constructor, ``params``,
    ``evaluate``/``accumulate``/``summarize``, ``stats`` and ``eval["precision"]``, so
    detectron2's ``_derive_coco_results`` reads it as is)."""
    if backend not in COCO_EVAL_BACKENDS:
        raise ValueError(f"TEST.COCO_EVAL_BACKEND must be one of {COCO_EVAL_BACKENDS}, got {backend!r}")
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        return COCOeval
    try:
        from faster_coco_eval import COCOeval_faster
    except ImportError as e:
        raise ImportError(
            f"TEST.COCO_EVAL_BACKEND is 'faster_coco_eval' but it cannot be imported ({e}): install it with "
            f"`python -m pip install {FASTER_COCO_EVAL}` (it is in requirements.txt: `make setup`), "
            "or set TEST.COCO_EVAL_BACKEND pycocotools"
        ) from e
    return COCOeval_faster


def evaluate_on_coco(coco_gt, coco_results: List[Dict], iou_type: str, cocoeval_fn,
                     img_ids: Optional[Sequence[int]] = None, max_dets: Sequence[int] = (1, 10, 100)):
    """One COCO evaluation of ``coco_results`` (COCO-format result dicts, dataset category
    ids) against ``coco_gt`` (a pycocotools ``COCO``), ``iou_type`` ``"bbox"`` or ``"segm"``,
    with the class ``cocoeval_fn``: evaluated, accumulated and summarized, returned.

    detectron2's ``_evaluate_predictions_on_coco`` does the same but puts a pycocotools
    subclass in place of ``cocoeval_fn`` when ``max_dets[2] != 100``; ``COCOeval_faster``
    itself reports AP at ``max_dets[-1]``, as that subclass does.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"evaluate_on_coco evaluates 'bbox' or 'segm', got {iou_type!r}")
    if iou_type == "segm":  # small/medium/large by mask area: no box in the results (as detectron2)
        coco_results = [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results]
    coco_eval = cocoeval_fn(coco_gt, coco_gt.loadRes(coco_results), iou_type)
    coco_eval.params.maxDets = list(max_dets)
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


class MarkUnreadable:
    """Wraps a test mapper: an unreadable image gives ``{"unreadable": ..., "image_id": ...}``."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, dataset_dict: Dict) -> Dict:
        try:
            return self.mapper(dataset_dict)
        except UnreadableImage as e:
            return {"unreadable": str(e), "file_name": e.file_name, "image_id": dataset_dict.get("image_id")}


class SkippingLoader:
    """The batches of a test loader without the unreadable images, which it reports to
    ``evaluator.left_out``."""

    def __init__(self, loader, evaluator: "SkippingCOCOEvaluator", dataset_name: str):
        self.loader, self.evaluator, self.dataset_name = loader, evaluator, dataset_name

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[List[Dict]]:
        for batch in self.loader:
            good = []
            for x in batch:
                if "unreadable" in x:
                    logger.warning("evaluation of %s: leaving out an image that cannot be read: %s",
                                   self.dataset_name, x["unreadable"])
                    self.evaluator.left_out.append((x["image_id"], x["file_name"]))
                else:
                    good.append(x)
            if good:
                yield good


class SkippingCOCOEvaluator(COCOEvaluator):
    """``COCOEvaluator`` on the images that could be read, its AP computed by the COCO API
    ``coco_eval_backend`` (a ``TEST.COCO_EVAL_BACKEND`` value; see the module docstring)."""

    def __init__(self, *args, coco_eval_backend: str = "pycocotools", **kwargs):
        cocoeval = cocoeval_class(coco_eval_backend)  # a bad value or a missing package fails here, before inference
        self._cocoeval_fn = None if coco_eval_backend == "pycocotools" else cocoeval
        super().__init__(*args, **kwargs)

    def _eval_predictions(self, predictions, img_ids=None):
        """detectron2's steps (category ids back to the dataset's, the results json, one
        evaluation per task) with ``self._cocoeval_fn``: detectron2 picks its class inside
        this method and takes none as an argument. pycocotools: detectron2's method itself."""
        if self._cocoeval_fn is None:
            return super()._eval_predictions(predictions, img_ids)
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if id_map:
            to_dataset = {v: k for k, v in id_map.items()}
            coco_results = [{**r, "category_id": to_dataset[r["category_id"]]} for r in coco_results]
        if self._output_dir:
            with PathManager.open(os.path.join(self._output_dir, "coco_instances_results.json"), "w") as f:
                json.dump(coco_results, f)
        if not self._do_evaluation:
            return
        logger.info("evaluating predictions with faster_coco_eval's COCOeval_faster")
        for task in sorted(tasks):
            coco_eval = (evaluate_on_coco(self._coco_api, coco_results, task, self._cocoeval_fn, img_ids,
                                          self._max_dets_per_image) if coco_results else None)
            self._results[task] = self._derive_coco_results(coco_eval, task,
                                                            class_names=self._metadata.get("thing_classes"))

    def reset(self):
        super().reset()
        self.left_out = []

    def evaluate(self, img_ids=None):
        left_out = self.left_out
        if self._distributed:
            left_out = [x for part in comm.all_gather(left_out) for x in part]
        if left_out and img_ids is None and hasattr(self, "_coco_api"):
            skipped = {i for i, _ in left_out}
            img_ids = [i for i in self._coco_api.getImgIds() if i not in skipped]
            if comm.is_main_process():
                names = ", ".join(f for _, f in left_out[:5]) + (" ..." if len(left_out) > 5 else "")
                logger.warning("%s: %d of %d images could not be read and are left out of the evaluation (%s)",
                               self._metadata.name, len(left_out), len(skipped) + len(img_ids), names)
        results = super().evaluate(img_ids)
        if left_out and results is not None and comm.is_main_process():
            results["images_left_out"] = {"count": len(left_out)}
        return results
