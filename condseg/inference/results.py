"""Predictions as plain, json-ready records: COCO results (RLE masks) for images and
per-frame records for videos.

A *record* is one detection::

    {"category_id": int,        # the dataset's own id (COCO ids for COCO), not the model's index
     "category_name": str,
     "score": float,
     "bbox": [x, y, w, h],       # XYWH_ABS, pixels of the original image
     "area": int,                # mask pixels
     "segmentation": {"size": [H, W], "counts": str}}   # compressed RLE, as in COCO

The same list is the ``annotations`` of :func:`coco_results_file` and the
``instances`` of one frame in :func:`video_results_file`.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util

from condseg.data.rle import encode_mask  # the datasets' encoder; re-exported here

__all__ = [
    "category_ids",
    "encode_mask",
    "decode_segmentation",
    "instances_to_records",
    "coco_results_file",
    "video_results_file",
]


def category_ids(metadata, num_classes: int) -> List[int]:
    """Dataset category id of each contiguous class index, as detectron2's
    ``COCOEvaluator`` maps them: through ``thing_dataset_id_to_contiguous_id`` when the
    metadata has it (COCO-format datasets), else the index itself (the evaluator inlines
    this map and has no function of it to call). Classes past the map (a model with more
    classes than its dataset) get ids past the dataset's largest, so that no two share one."""
    mapping = getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
    if not mapping:
        return list(range(num_classes))
    reverse = {v: k for k, v in mapping.items()}
    spare = iter(range(max(mapping) + 1, max(mapping) + 1 + num_classes))
    return [int(reverse[i]) if i in reverse else next(spare) for i in range(num_classes)]


def decode_segmentation(segmentation: Dict) -> np.ndarray:
    """Inverse of :func:`encode_mask`: ``(H, W)`` bool."""
    rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return mask_util.decode(rle).astype(bool)


def instances_to_records(instances, class_names: Sequence[str],
                         dataset_ids: Optional[Sequence[int]] = None) -> List[Dict]:
    """detectron2 ``Instances`` (``pred_boxes``, ``scores``, ``pred_classes`` and
    optionally ``pred_masks`` ``(N, H, W)`` bool at the original image size) -> one
    record per detection, in the instances' order (the module docstring gives the
    fields; ``segmentation`` and ``area`` only with masks). ``dataset_ids[c]`` is the
    category id written for class index ``c`` (default ``c``).

    Not detectron2's ``instances_to_coco_json``: it writes no ``category_name`` or
    ``area``, contiguous class indices, and unrounded float32 scores and boxes."""
    n = len(instances)
    if n == 0:
        return []
    boxes = instances.pred_boxes.tensor.detach().cpu().numpy().astype(np.float64)
    scores = instances.scores.detach().cpu().numpy().astype(np.float64)
    classes = instances.pred_classes.detach().cpu().numpy()
    masks = instances.pred_masks.detach().cpu().numpy() if instances.has("pred_masks") else None
    records = []
    for i in range(n):
        c = int(classes[i])
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        record = {
            "category_id": int(dataset_ids[c]) if dataset_ids is not None else c,
            "category_name": class_names[c] if c < len(class_names) else str(c),
            "score": round(float(scores[i]), 5),
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
        }
        if masks is not None:
            record["segmentation"] = encode_mask(masks[i])
            record["area"] = int(masks[i].sum())
        records.append(record)
    return records


def _categories(class_names: Sequence[str], dataset_ids: Optional[Sequence[int]]) -> List[Dict]:
    ids = dataset_ids if dataset_ids is not None else range(len(class_names))
    return [{"id": int(i), "name": name} for i, name in zip(ids, class_names)]


def coco_results_file(images: Sequence[Dict], records_per_image: Sequence[List[Dict]],
                      class_names: Sequence[str], dataset_ids: Optional[Sequence[int]] = None,
                      info: Optional[Dict] = None) -> Dict:
    """A COCO-format json of predictions on images.

    Args:
        images: per image ``{"id", "file_name", "height", "width"}``.
        records_per_image: :func:`instances_to_records` of each image, same order.

    Returns:
        ``{"info", "images", "categories", "annotations"}``: it loads with
        ``pycocotools.coco.COCO`` (and detectron2's ``load_coco_json``), and its
        ``annotations`` (each with ``id``, ``image_id``, ``iscrowd`` 0 and ``score``) is
        the COCO *results* list that ``COCO.loadRes`` takes.
    """
    annotations = []
    for image, records in zip(images, records_per_image):
        for record in records:
            ann = dict(record, id=len(annotations) + 1, image_id=int(image["id"]), iscrowd=0)
            ann.pop("category_name", None)
            annotations.append(ann)
    return {
        "info": dict(info or {}, description="condseg predictions"),
        "images": [dict(image) for image in images],
        "categories": _categories(class_names, dataset_ids),
        "annotations": annotations,
    }


def video_results_file(video: str, fps: float, width: int, height: int, frames: Sequence[Dict],
                       class_names: Sequence[str], dataset_ids: Optional[Sequence[int]] = None,
                       errors: Sequence[Dict] = (), complete: bool = True) -> Dict:
    """Per-frame predictions on a video.

    Args:
        frames: ``{"frame": index (0-based, decoding order), "time": seconds,
            "instances": [record + "track_id"]}`` for every frame that was processed.
        errors: ``{"frame": index, "message"}`` for frames that could not be decoded.
        complete: False when the run stopped before the end of the video.
    """
    return {
        "video": video,
        "fps": float(fps),
        "width": int(width),
        "height": int(height),
        "num_frames": len(frames),
        "complete": bool(complete),
        "categories": _categories(class_names, dataset_ids),
        "frames": list(frames),
        "errors": list(errors),
    }

