"""What a report reads: COCO results (``coco_instances_results.json``, as detectron2's
``COCOEvaluator`` writes it), the ground truth as a pycocotools ``COCO`` (a json file, or a
registered dataset), and where the images are."""
import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from pycocotools.coco import COCO

from .cocoeval import quiet

__all__ = ["check_results", "ground_truth_of_dataset", "ground_truth_of_json", "image_finder", "iou_types_of",
           "load_results"]


def load_results(path: str) -> List[Dict]:
    """The detections of a COCO results json: a list of ``{"image_id", "category_id",
    "score", "bbox" and/or "segmentation"}``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"results file {path} does not exist")
    with open(path) as f:
        try:
            results = json.load(f)
        except ValueError as e:
            raise ValueError(f"results file {path} is not json: {e}") from e
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise ValueError(f"results file {path} must hold a list of detections (COCO results format)")
    for i, r in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "score") if k not in r]
        if missing or not ("bbox" in r or "segmentation" in r):
            what = ", ".join(missing) or "bbox or segmentation"
            raise ValueError(f"results file {path}: detection {i} has no {what}")
    return results


def check_results(results: Sequence[Dict], coco_gt: COCO, source: str, gt_source: str) -> None:
    """Raise ``ValueError`` naming the first image id or category id of ``results`` (read
    from ``source``) that the ground truth (``gt_source``) does not have."""
    images, cats = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for r in results:
        if r["image_id"] not in images:
            raise ValueError(f"{source}: a detection of image id {r['image_id']}, which {gt_source} does not have")
        if r["category_id"] not in cats:
            raise ValueError(f"{source}: a detection of category id {r['category_id']}, which {gt_source} does not "
                             f"have (its ids: {sorted(cats)})")


def iou_types_of(results: Sequence[Dict], coco_gt: COCO) -> List[str]:
    """``["bbox"]``, plus ``"segm"`` when the detections have masks and every ground truth
    has a segmentation (as the evaluation decides)."""
    types = ["bbox"] if results and all("bbox" in r for r in results) else []
    has_masks = bool(results) and all("segmentation" in r for r in results)
    if has_masks and all(a.get("segmentation") for a in coco_gt.dataset.get("annotations", [])):
        types.append("segm")
    return types


def ground_truth_of_json(json_file: str) -> COCO:
    """A ``COCO`` of ``json_file``."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"ground-truth json {json_file} does not exist")
    with quiet():
        return COCO(json_file)


def ground_truth_of_dataset(name: str) -> Tuple[COCO, str]:
    """``(COCO, image_root)`` of a registered dataset: its ``json_file`` when the metadata
    has one (the json the evaluation reads), else its dicts converted as detectron2's
    evaluation converts them (``convert_to_coco_dict``)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets.coco import convert_to_coco_dict

    if name not in DatasetCatalog.list():
        raise KeyError(f"dataset {name!r} is not registered (DATASETS.COCO registers more; "
                       f"registered: {', '.join(sorted(DatasetCatalog.list()))})")
    DatasetCatalog.get(name)  # a generated dataset is written at first use; loading checks the json
    meta = MetadataCatalog.get(name)
    image_root = meta.get("image_root", "")
    if meta.get("json_file"):
        return ground_truth_of_json(meta.json_file), image_root
    coco = COCO()
    coco.dataset = convert_to_coco_dict(name)
    with quiet():
        coco.createIndex()
    return coco, image_root


def image_finder(coco_gt: COCO, image_root: str = "") -> Callable[[int], Optional[str]]:
    """``image_id -> path`` of the image file (``file_name`` under ``image_root``, or as
    it is when that exists: converted datasets hold full paths), None when neither exists."""

    def find(image_id: int) -> Optional[str]:
        name = coco_gt.imgs[image_id].get("file_name", "")
        for path in (os.path.join(image_root, name) if image_root else name, name):
            if path and os.path.isfile(path):
                return path
        return None

    return find
