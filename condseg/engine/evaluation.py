"""COCO evaluation that goes on past images it cannot read.

detectron2's test loader stops at the first image that cannot be read, with no results
at all. Here the mapper's :class:`~condseg.data.UnreadableImage` becomes a marker that
:class:`SkippingLoader` drops (naming the file), and :class:`SkippingCOCOEvaluator`
evaluates the other images only (``COCOEvaluator.evaluate(img_ids=...)``), saying how
many were left out.
"""
import logging
from typing import Dict, Iterator, List

from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from condseg.data import UnreadableImage

__all__ = ["MarkUnreadable", "SkippingCOCOEvaluator", "SkippingLoader"]

logger = logging.getLogger("condseg")


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
    """``COCOEvaluator`` on the images that could be read (see the module docstring)."""

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
