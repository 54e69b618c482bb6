"""Ground truth drawn on its image: a dataset as it is stored, or as the training mapper
feeds it to the model (resized, flipped), and a contact sheet of several images.

``tools/browse_dataset.py`` is the command line. The pieces are separate so that each can
be used alone: :func:`stored_ground_truth` / :func:`augmented_ground_truth` turn a dataset
dict / a mapped dict into a :class:`GroundTruth` of numpy arrays, :func:`draw_ground_truth`
draws one, :func:`contact_sheet` tiles several drawings (made at the sheet's scale with
:func:`resize_ground_truth`, so that the labels keep their size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import detection_utils as utils
from detectron2.structures import BitMasks, BoxMode, PolygonMasks

from condseg.data.train_loader import sample_seed, seeded_rngs

# condseg's renderer, not detectron2's Visualizer: Visualizer fills the holes of holed masks
# (it draws each contour as a filled polygon) and lets labels cover each other; this one
# blends the mask pixels themselves and moves each label tab past the ones already placed.
from condseg.inference.render import color_of, draw_instances

__all__ = ["GroundTruth", "select_indices", "stored_ground_truth", "augmented_ground_truth", "map_for_training",
           "resize_ground_truth", "draw_ground_truth", "contact_sheet"]


@dataclass
class GroundTruth:
    """One image and its instances, as numpy arrays.

    Attributes:
        image: ``(H, W, 3)`` uint8 BGR.
        boxes: ``(N, 4)`` float32 XYXY_ABS pixels.
        classes: ``(N,)`` int64 contiguous class ids.
        masks: ``(N, H, W)`` bool (all False for a box-only instance), or None when no
            instance has a mask.
        crowd: ``(N,)`` bool, the crowd annotations (``iscrowd: 1``).
    """

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    masks: Optional[np.ndarray]
    crowd: np.ndarray


def select_indices(num_images: int, num: int, seed: int) -> np.ndarray:
    """``min(num, num_images)`` distinct image indices drawn with ``seed``, in increasing order."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_images, size=min(int(num), num_images), replace=False))


def _decode_mask(segm, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool of a dataset dict's ``segmentation``: polygons, RLE (compressed or
    not) or a bitmask array."""
    if isinstance(segm, np.ndarray):
        mask = segm.astype(bool)
    elif isinstance(segm, dict):
        rle = mask_util.frPyObjects(segm, *segm["size"]) if isinstance(segm["counts"], list) else segm
        mask = mask_util.decode(rle).astype(bool)
    else:
        polys = [list(map(float, p)) for p in segm if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), bool)
        mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polys, height, width))).astype(bool)
    if mask.shape != (height, width):
        raise ValueError(f"a mask of size {mask.shape} on an image of size {(height, width)}")
    return mask


def stored_ground_truth(dataset_dict: dict) -> GroundTruth:
    """The image of a detectron2 dataset dict (read with EXIF orientation, size checked
    against the dict's ``height``/``width`` as the training mapper does) and its annotations
    as stored: every annotation, crowd included, box-only ones without a mask."""
    image = utils.read_image(dataset_dict["file_name"], format="BGR")
    utils.check_image_size(dataset_dict, image)
    h, w = image.shape[:2]
    anns = dataset_dict.get("annotations", [])
    boxes = np.array([BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
                      for a in anns], np.float32).reshape(-1, 4)
    masks = None
    if any(a.get("segmentation") is not None for a in anns):
        try:
            masks = np.stack([_decode_mask(a["segmentation"], h, w) if a.get("segmentation") is not None
                              else np.zeros((h, w), bool) for a in anns])
        except ValueError as e:
            raise ValueError(f"{dataset_dict['file_name']}: {e}") from e
    classes = np.array([int(a["category_id"]) for a in anns], np.int64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
    return GroundTruth(image, boxes, classes, masks, crowd)


def map_for_training(mapper: Callable[[dict], dict], dataset_dict: dict, seed: int, index: int) -> dict:
    """``mapper(dataset_dict)`` with the global RNGs seeded from ``(seed, index)``: the same
    image gets the same resize and flip every time."""
    with seeded_rngs(sample_seed(seed, index)):
        return mapper(dataset_dict)


def augmented_ground_truth(mapped: dict, input_format: str) -> GroundTruth:
    """What the model is fed, from a training mapper's output: ``image`` ``(C, H, W)`` in
    ``input_format`` (the config's ``INPUT.FORMAT``) and ``instances`` (``gt_boxes``,
    ``gt_classes``, ``gt_masks`` as PolygonMasks or BitMasks when masks are trained)."""
    image = np.ascontiguousarray(utils.convert_image_to_rgb(mapped["image"].permute(1, 2, 0), input_format)[:, :, ::-1])
    h, w = image.shape[:2]
    inst = mapped["instances"]
    masks = None
    if inst.has("gt_masks"):
        gt = inst.gt_masks
        gt = BitMasks.from_polygon_masks(gt, h, w) if isinstance(gt, PolygonMasks) else gt
        masks = gt.tensor.numpy().astype(bool).reshape(len(inst), h, w)
    return GroundTruth(image, inst.gt_boxes.tensor.numpy().astype(np.float32).reshape(-1, 4),
                       inst.gt_classes.numpy().astype(np.int64), masks, np.zeros(len(inst), bool))


def resize_ground_truth(gt: GroundTruth, max_side: int) -> GroundTruth:
    """``gt`` scaled (aspect kept) so that its longer side is ``max_side`` px: the image
    area-averaged (bilinear when enlarged), the masks nearest-neighbour, the boxes scaled.
    Drawing after resizing keeps the labels at their legible size on a small picture."""
    h, w = gt.image.shape[:2]
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(gt.image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    masks = None
    if gt.masks is not None:
        masks = np.zeros((len(gt.masks), size[1], size[0]), bool)
        for k, m in enumerate(gt.masks):
            masks[k] = cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    boxes = gt.boxes * np.array([size[0] / w, size[1] / h] * 2, np.float32)
    return GroundTruth(image, boxes, gt.classes.copy(), masks, gt.crowd.copy())


def draw_ground_truth(gt: GroundTruth, class_names: Sequence[str] = (),
                      class_colors: Optional[Sequence[Tuple[int, int, int]]] = None, alpha: float = 0.5) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR: ``gt.image`` with each instance's mask, box and class name
    (``"name crowd"`` for a crowd annotation), coloured by class: ``class_colors`` are RGB
    (detectron2's metadata ``thing_colors``), else condseg's palette."""
    names = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in gt.classes]
    labels = [f"{n} crowd" if crowd else n for n, crowd in zip(names, gt.crowd)]
    if class_colors is not None and all(0 <= c < len(class_colors) for c in gt.classes):
        colors = [tuple(int(v) for v in class_colors[c][::-1]) for c in gt.classes]
    else:
        colors = [color_of(c) for c in gt.classes]
    return draw_instances(gt.image, gt.boxes, gt.masks, labels, colors, alpha=alpha)


def contact_sheet(images: Sequence[np.ndarray], columns: int = 4, cell: int = 320,
                  background: Tuple[int, int, int] = (32, 32, 32), gap: int = 2) -> np.ndarray:
    """Tile ``(H, W, 3)`` images into a ``(rows * cell + gaps, columns * cell + gaps, 3)``
    grid, row by row, each scaled to fit its ``cell`` x ``cell`` square (aspect kept,
    centred on ``background``)."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    columns = max(1, min(int(columns), len(images)))
    rows = -(-len(images) // columns)
    step = cell + gap
    sheet = np.full((rows * step - gap, columns * step - gap, 3), background, np.uint8)
    for k, image in enumerate(images):
        h, w = image.shape[:2]
        scale = cell / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        fitted = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        y = (k // columns) * step + (cell - size[1]) // 2
        x = (k % columns) * step + (cell - size[0]) // 2
        sheet[y:y + size[1], x:x + size[0]] = fitted
    return sheet
