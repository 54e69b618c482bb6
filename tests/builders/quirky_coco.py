"""A small COCO-format dataset that exhibits every real-world json quirk condseg handles.

``make_quirky_coco(directory)`` writes PNG images (circles, squares and triangles in
class colours on a noisy background) and ``annotations.json``. Each drawn object is
defined by a float polygon; its mask is that polygon rasterised by pycocotools, so the
polygon / RLE annotations match the pixels exactly (what COCO evaluation sees). The
drawn masks are also saved in ``quirky_truth.npz`` (read them with ``load_truth_masks``).

Quirks (ids are fixed, see the constants below; images are ``1..num_images``):

1. category ids 3, 7, 42, 99 -- non-contiguous, and listed unsorted in ``categories``;
2. category 99 ("hexagon") has no annotation;
3. ``iscrowd`` as booleans (ann 101 ``false``, 103 ``false``, crowd ann 202 ``true``);
4. extra fields ``keypoints``, ``num_keypoints``, ``attributes`` on ann 101;
5. image 4 (``EMPTY_IMAGE_ID``) has no annotation (its picture is only background);
6. ann 102: compressed RLE (str counts); ann 103: uncompressed RLE (list counts), no
   ``bbox`` and no ``area``; crowd ann 202: uncompressed RLE;
7. ann 201: two degenerate polygons (2 points; odd length) before its valid one -- a
   4-number first polygon is what makes pycocotools' evaluation crash on the raw json;
   ann 203: only degenerate polygons (a spurious click, nothing drawn) -> dropped;
8. ann 204: a spurious annotation with a zero-width bbox -> dropped.

Every other object is a plain valid polygon (every third one of the later images a
compressed RLE); each annotated image has 2-4 non-crowd valid objects.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util

__all__ = [
    "make_quirky_coco",
    "load_truth_masks",
    "CATEGORIES",
    "EMPTY_CATEGORY_ID",
    "EMPTY_IMAGE_ID",
    "QUIRK_ANN_IDS",
    "DROPPED_ANN_IDS",
]

CATEGORIES = [  # unsorted on purpose; contiguous ids follow the sorted ids 3, 7, 42, 99
    {"id": 42, "name": "triangle", "supercategory": "shape"},
    {"id": 3, "name": "circle", "supercategory": "shape"},
    {"id": 99, "name": "hexagon", "supercategory": "shape"},  # never annotated
    {"id": 7, "name": "square", "supercategory": "shape"},
]
SHAPE_CATEGORY = {"circle": 3, "square": 7, "triangle": 42}
SHAPE_COLOR = {"circle": (60, 60, 220), "square": (60, 200, 60), "triangle": (220, 130, 40)}  # BGR
SHAPES = ("circle", "square", "triangle")
EMPTY_CATEGORY_ID = 99
EMPTY_IMAGE_ID = 4
QUIRK_ANN_IDS = {
    "extra_fields": 101,  # keypoints, num_keypoints, attributes; iscrowd false
    "rle_compressed": 102,
    "rle_uncompressed": 103,  # iscrowd false, no bbox, no area
    "partly_degenerate": 201,  # 2 degenerate polygons + 1 valid
    "crowd": 202,  # iscrowd true, uncompressed RLE
    "all_degenerate": 203,  # dropped
    "zero_width_bbox": 204,  # dropped
}
DROPPED_ANN_IDS = (203, 204)
TRUTH_FILE = "quirky_truth.npz"


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[float]:
    n = {"circle": 24, "square": 4, "triangle": 3}[shape]
    t = angle + np.arange(n) * 2 * np.pi / n
    pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    return [round(float(v), 2) for v in pts.ravel()]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat])))  # where a run starts
    bounds = np.concatenate([[0], change, [flat.size]])
    return {"size": list(mask.shape), "counts": [int(c) for c in np.diff(bounds)]}


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def make_quirky_coco(directory, num_images: int = 6, size=(96, 128)) -> tuple[str, str]:
    """Write the dataset under ``directory``; return ``(json_file, image_root)``.

    ``size`` is ``(height, width)`` of every image; ``num_images`` must be >= 4 (images 1-3
    carry the quirks, image 4 is the empty one). Deterministic.
    """
    if num_images < 4:
        raise ValueError("make_quirky_coco needs num_images >= 4")
    h, w = int(size[0]), int(size[1])
    directory = os.fspath(directory)
    image_root = os.path.join(directory, "images")
    os.makedirs(image_root, exist_ok=True)
    rng = np.random.default_rng(20240607)

    rows, cols = 2, 3
    ch, cw = h / rows, w / cols
    images, annotations, truth = [], [], {}

    for image_id in range(1, num_images + 1):
        img = rng.normal(115, 22, size=(h, w, 3))
        img = cv2.GaussianBlur(img, (3, 3), 0)
        if image_id == EMPTY_IMAGE_ID:
            n_obj = 0
        elif image_id in (1, 2):
            n_obj = 4
        elif image_id == 3:
            n_obj = 3
        else:
            n_obj = int(rng.integers(2, 5))
        cells = rng.permutation(rows * cols)[:n_obj]
        objects = []
        for j, cell in enumerate(cells):
            shape = SHAPES[(image_id + j) % 3]
            r_max = min(ch, cw) / 2 - 2
            r = float(rng.uniform(0.6 * r_max, r_max))
            cy = (cell // cols + 0.5) * ch + rng.uniform(-1, 1) * (ch / 2 - r - 1)
            cx = (cell % cols + 0.5) * cw + rng.uniform(-1, 1) * (cw / 2 - r - 1)
            poly = _shape_polygon(shape, cx, cy, r, float(rng.uniform(0, 2 * np.pi)))
            mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects([poly], h, w))).astype(bool)
            color = np.asarray(SHAPE_COLOR[shape], np.float64) + rng.normal(0, 12, size=3)
            img[mask] = color + rng.normal(0, 8, size=(int(mask.sum()), 3))
            objects.append((shape, poly, mask))
        file_name = f"img_{image_id:03d}.png"
        cv2.imwrite(os.path.join(image_root, file_name), np.clip(img, 0, 255).astype(np.uint8))
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w, "license": 1})

        for j, (shape, poly, mask) in enumerate(objects):
            ann_id = 100 * image_id + j + 1
            if image_id == 2 and j >= 2:
                ann_id += 3  # 205, 206: leave 203, 204 to the spurious ones
            rle = _compressed_rle(mask)
            ann = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": SHAPE_CATEGORY[shape],
                "segmentation": [poly],
                "area": float(mask_util.area(rle)),
                "bbox": [round(float(v), 2) for v in mask_util.toBbox(rle)],
                "iscrowd": 0,
            }
            if ann_id == 101:
                xs, ys = poly[0::2], poly[1::2]
                ann["iscrowd"] = False
                ann["keypoints"] = [int(np.mean(xs)), int(np.mean(ys)), 2]
                ann["num_keypoints"] = 1
                ann["attributes"] = {"occluded": False, "color": "varies"}
            elif ann_id == 102:
                ann["segmentation"] = rle
            elif ann_id == 103:
                ann["segmentation"] = _uncompressed_rle(mask)
                ann["iscrowd"] = False
                del ann["bbox"], ann["area"]
            elif ann_id == 201:
                x, y = poly[0], poly[1]
                ann["segmentation"] = [[x, y, x + 1.0, y + 1.0], [x, y, x + 2.0, y, x + 2.0], poly]
            elif ann_id == 202:
                ann["segmentation"] = _uncompressed_rle(mask)
                ann["iscrowd"] = True
            elif image_id > EMPTY_IMAGE_ID and j % 3 == 2:
                ann["segmentation"] = rle
            annotations.append(ann)
            truth[f"ann_{ann_id}"] = mask
        if image_id == 2:  # spurious annotations, nothing drawn for them
            annotations.append(
                {
                    "id": 203, "image_id": 2, "category_id": 3, "iscrowd": 0,
                    "segmentation": [[5.0, 5.0, 8.0, 8.0], [1.0, 2.0, 3.0, 4.0, 5.0]],
                    "bbox": [5.0, 5.0, 3.0, 3.0], "area": 0.0,
                }
            )
            annotations.append(
                {
                    "id": 204, "image_id": 2, "category_id": 7, "iscrowd": 0,
                    "segmentation": [[2.0, 2.0, 6.0, 2.0, 4.0, 6.0]],
                    "bbox": [2.0, 2.0, 0.0, 4.0], "area": 8.0,
                }
            )

    coco = {
        "info": {"description": "condseg quirky COCO fixture", "version": "1"},
        "licenses": [{"id": 1, "name": "test"}],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    json_file = os.path.join(directory, "annotations.json")
    with open(json_file, "w") as f:
        json.dump(coco, f)
    np.savez_compressed(os.path.join(directory, TRUTH_FILE), **truth)
    return json_file, image_root


def load_truth_masks(directory) -> dict[int, np.ndarray]:
    """The drawn masks of ``make_quirky_coco(directory)``: annotation id -> bool HxW array."""
    with np.load(os.path.join(os.fspath(directory), TRUTH_FILE)) as z:
        return {int(k.split("_")[1]): z[k].astype(bool) for k in z.files}
