"""Deterministic synthetic detections of a COCO ground truth with every kind of error:
jittered true positives, poorly localised ones, duplicates, class confusions within and
across supercategories, misses and background false positives."""
import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

__all__ = ["synthetic_results"]


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


def _record(image_id: int, category_id: int, score: float, mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_util.toBbox(rle)]
    return {"image_id": int(image_id), "category_id": int(category_id), "score": round(float(score), 4),
            "bbox": bbox, "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}}


def synthetic_results(coco: COCO, seed: int = 0) -> list:
    """Detections of ``coco``'s images (COCO results format, dataset category ids)."""
    rng = np.random.default_rng(seed)
    cats = sorted(coco.getCatIds())
    supers = {c: coco.cats[c]["supercategory"] for c in cats}
    results = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        h, w = info["height"], info["width"]
        for ann in coco.imgToAnns[image_id]:
            mask = coco.annToMask(ann).astype(bool)
            _, _, bw, bh = ann["bbox"]
            u = rng.random()
            if u < 0.15:
                continue  # missed
            if u < 0.32:  # class confusion, within the supercategory or not
                same = [c for c in cats if c != ann["category_id"] and supers[c] == supers[ann["category_id"]]]
                other = [c for c in cats if supers[c] != supers[ann["category_id"]]]
                pick = same if rng.random() < 0.5 else other
                cat = int(rng.choice(pick or same or other))
                results.append(_record(image_id, cat, rng.uniform(0.2, 0.8), _shift(mask, *rng.integers(-1, 2, 2))))
                continue
            if u < 0.42:  # poorly localised: IoU well under 0.5, over 0.1
                dy, dx = int(round(0.45 * bh)), int(round(0.45 * bw))
                results.append(_record(image_id, ann["category_id"], rng.uniform(0.3, 0.9), _shift(mask, dy, dx)))
                continue
            results.append(_record(image_id, ann["category_id"], rng.uniform(0.35, 1.0),
                                   _shift(mask, *rng.integers(-2, 3, 2))))
            if rng.random() < 0.2:  # a duplicate, lower
                results.append(_record(image_id, ann["category_id"], rng.uniform(0.05, 0.5),
                                       _shift(mask, *rng.integers(-3, 4, 2))))
        for _ in range(int(rng.integers(1, 4))):  # background
            fp = np.zeros((h, w), bool)
            y0, x0 = int(rng.integers(0, h - 16)), int(rng.integers(0, w - 16))
            fp[y0:y0 + int(rng.integers(6, 16)), x0:x0 + int(rng.integers(6, 16))] = True
            results.append(_record(image_id, int(rng.choice(cats)), rng.uniform(0.05, 0.7), fp))
    return results
