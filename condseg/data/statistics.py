"""What a dataset holds, in numbers: images, instances per class, instance sizes against
COCO's small / medium / large, images without annotations, instances per image.

:func:`dataset_statistics` is a pure function of detectron2 dataset dicts;
:func:`format_statistics` prints it, :func:`draw_statistics` draws its histograms
(matplotlib, without pyplot's global state). ``tools/browse_dataset.py`` writes both.

Counting rules (COCO evaluation's): crowd annotations (``iscrowd: 1``) are not
instances (evaluation ignores them), they are counted apart; an instance's area is its
stored mask's pixel count (polygons rasterised by pycocotools at the image's size, RLE,
or a bitmask array), else the annotation's ``area`` when a loader kept it, else its box's
``w * h`` (box-only annotations). COCO's size classes: small ``area < 32**2``, medium
``area < 96**2``, large otherwise.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures import BoxMode

__all__ = ["SIZE_CLASSES", "SIZE_THRESHOLDS", "instance_area", "size_class", "dataset_statistics",
           "format_statistics", "draw_statistics"]

SIZE_CLASSES = ("small", "medium", "large")
SIZE_THRESHOLDS = (32 ** 2, 96 ** 2)  # COCO's area ranges (pycocotools' COCOeval.Params.areaRng)


def instance_area(ann: dict, height: int, width: int) -> Tuple[float, str]:
    """``(area in pixels, where it came from: "mask" | "area" | "box")`` of one annotation
    of an image of ``height`` x ``width`` (see the module docstring)."""
    segm = ann.get("segmentation")
    if isinstance(segm, np.ndarray):  # a bitmask (H, W), as detectron2 allows in dataset dicts
        return float(np.count_nonzero(segm)), "mask"
    if isinstance(segm, dict):  # RLE, compressed or not
        rle = segm if not isinstance(segm.get("counts"), list) else mask_util.frPyObjects(segm, *segm["size"])
        return float(mask_util.area(rle)), "mask"
    if isinstance(segm, list) and segm:  # polygons: the pixels COCO evaluation rasterises
        polys = [list(map(float, p)) for p in segm if len(p) >= 6]
        if polys:
            return float(mask_util.area(mask_util.merge(mask_util.frPyObjects(polys, height, width)))), "mask"
    if ann.get("area") is not None:
        return float(ann["area"]), "area"
    x0, y0, x1, y1 = BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
    return float(max(x1 - x0, 0.0) * max(y1 - y0, 0.0)), "box"


def size_class(area: float) -> str:
    """``"small"``, ``"medium"`` or ``"large"`` for an area in pixels (COCO's ranges)."""
    return SIZE_CLASSES[int(np.searchsorted(SIZE_THRESHOLDS, area, side="right"))]


def dataset_statistics(dataset_dicts: Sequence[dict], class_names: Optional[Sequence[str]] = None,
                       progress: bool = False) -> Dict:
    """The numbers of a dataset.

    Args:
        dataset_dicts: detectron2 dataset dicts (``height``, ``width``, ``annotations`` with
            contiguous ``category_id``, ``bbox``/``bbox_mode``, optional ``segmentation``,
            ``iscrowd``, ``area``).
        class_names: the names of the contiguous ids (metadata ``thing_classes``); an id
            without a name is named by its number.
        progress: a tqdm bar over the images.

    Returns:
        a json-serialisable dict: ``images``, ``images_without_annotations`` (no annotation at
        all), ``images_with_only_crowd``, ``instances`` (not crowd), ``crowd_instances``,
        ``box_only_instances`` (no mask), ``classes``, ``instances_per_class`` (name ->
        count, every class, in id order), ``sizes`` (small/medium/large -> count),
        ``size_thresholds``, ``area_from`` (mask/area/box -> count), ``instances_per_image``
        (``min``, ``median``, ``mean``, ``max``, ``histogram``: entry k is the number of
        images with k instances).
    """
    names = list(class_names or [])
    per_class: Dict[int, int] = {}
    sizes = dict.fromkeys(SIZE_CLASSES, 0)
    area_from = {"mask": 0, "area": 0, "box": 0}
    per_image: List[int] = []
    no_annotations = only_crowd = crowd = box_only = 0
    items = dataset_dicts
    if progress:
        from tqdm import tqdm

        items = tqdm(dataset_dicts, unit="image", desc="statistics", dynamic_ncols=True)
    for d in items:
        anns = d.get("annotations", [])
        n = 0
        for ann in anns:
            if ann.get("iscrowd", 0):
                crowd += 1
                continue
            n += 1
            c = int(ann["category_id"])
            per_class[c] = per_class.get(c, 0) + 1
            area, source = instance_area(ann, int(d["height"]), int(d["width"]))
            sizes[size_class(area)] += 1
            area_from[source] += 1
            box_only += source != "mask"
        per_image.append(n)
        no_annotations += not anns
        only_crowd += bool(anns) and n == 0
    num_ids = max([len(names), *(c + 1 for c in per_class)])
    names += [str(i) for i in range(len(names), num_ids)]
    counts = np.asarray(per_image, dtype=np.int64)
    return {
        "images": len(per_image),
        "images_without_annotations": no_annotations,
        "images_with_only_crowd": only_crowd,
        "instances": int(counts.sum()),
        "crowd_instances": crowd,
        "box_only_instances": box_only,
        "classes": names,
        "instances_per_class": {names[i]: per_class.get(i, 0) for i in range(num_ids)},
        "sizes": sizes,
        "size_thresholds": list(SIZE_THRESHOLDS),
        "area_from": area_from,
        "instances_per_image": {
            "min": int(counts.min()) if counts.size else 0,
            "median": float(np.median(counts)) if counts.size else 0.0,
            "mean": float(counts.mean()) if counts.size else 0.0,
            "max": int(counts.max()) if counts.size else 0,
            "histogram": np.bincount(counts).tolist() if counts.size else [],
        },
    }


def _share(n: int, total: int) -> str:
    return f"{100.0 * n / total:5.1f}%" if total else "    -"


def format_statistics(stats: Dict, name: str = "") -> str:
    """A few lines of text: the counts, a table of classes and one of sizes."""
    n, per = stats["instances"], stats["instances_per_image"]
    lines = [
        f"{name + ': ' if name else ''}{stats['images']} images, {n} instances "
        f"({stats['crowd_instances']} crowd annotations apart, {stats['box_only_instances']} without a mask)",
        f"images without annotations: {stats['images_without_annotations']}"
        f" (only crowd: {stats['images_with_only_crowd']})",
        f"instances per image: min {per['min']}, median {per['median']:g}, mean {per['mean']:.2f}, max {per['max']}",
    ]
    width = max([5, *map(len, stats["instances_per_class"])])
    lines.append(f"{'class':<{width}}  instances   share")
    lines += [f"{c:<{width}}  {k:9d}  {_share(k, n)}" for c, k in stats["instances_per_class"].items()]
    small, medium = (int(round(t ** 0.5)) for t in stats["size_thresholds"])
    ranges = {"small": f"< {small}^2", "medium": f"< {medium}^2", "large": f">= {medium}^2"}
    lines.append(f"{'size':<{width}}  instances   share   (area in px, from "
                 + ", ".join(f"{k} {v}" for k, v in stats["area_from"].items() if v) + ")")
    lines += [f"{s:<{width}}  {k:9d}  {_share(k, n)}   {ranges[s]}" for s, k in stats["sizes"].items()]
    return "\n".join(lines)


def draw_statistics(stats: Dict, path: str, title: str = "") -> None:
    """Write a PNG of three bar charts: instances per class, per size class, and the
    number of images with each number of instances."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(13, 3.8), dpi=90, layout="constrained")
    ax_class, ax_size, ax_image = fig.subplots(1, 3, width_ratios=(3, 1.3, 2.5))
    classes = list(stats["instances_per_class"])
    ax_class.bar(range(len(classes)), list(stats["instances_per_class"].values()), color="tab:blue")
    ax_class.set_xticks(range(len(classes)), classes, rotation=30 if len(classes) > 6 else 0, ha="right"
                        if len(classes) > 6 else "center")
    ax_class.set_title("instances per class")
    small, medium = (int(round(t ** 0.5)) for t in stats["size_thresholds"])
    labels = [f"small\n< {small}²", f"medium\n< {medium}²", f"large\n≥ {medium}²"]
    ax_size.bar(labels, [stats["sizes"][s] for s in SIZE_CLASSES], color=["tab:orange", "tab:green", "tab:red"])
    ax_size.set_title("instances per size (area, px)")
    hist = stats["instances_per_image"]["histogram"]
    ax_image.bar(range(len(hist)), hist, color="tab:purple", width=0.9)
    ax_image.set_xlabel("instances in the image")
    ax_image.set_title("images per number of instances")
    for ax in (ax_class, ax_size, ax_image):
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    ax_class.set_ylabel("count")
    if title:
        fig.suptitle(f"{title}: {stats['images']} images, {stats['instances']} instances")
    fig.savefig(path)
