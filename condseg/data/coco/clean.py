"""Cleaning one annotation: its mask, ``iscrowd``, box and area, each normalised or
dropped with a reason (see the package docstring for every quirk)."""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures.masks import polygon_area

from .report import D_BOX, D_NOBOX, D_NOSEG, D_POLY, Report

__all__ = ["is_number", "clean_segmentation", "clean_mask", "clean_iscrowd", "clean_bbox", "check_area"]

_FAST_NUMBER_TYPES = (int, float)  # what json gives; checked by exact type first (speed)
_MISSING = object()


def is_number(x: Any) -> bool:
    t = type(x)
    if t is float or t is int:
        return True
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def all_numbers(values) -> bool:
    return all(type(v) in _FAST_NUMBER_TYPES for v in values) or all(is_number(v) for v in values)


def clean_segmentation(segm, height: int, width: int):
    """Normalise one annotation's ``segmentation``.

    Returns ``(segmentation, problems, fixes)``: ``segmentation`` is a list of flat float
    polygons or a compressed RLE dict with ``str`` counts, or ``None`` when nothing usable
    is left; ``problems`` are human-readable reasons for what was dropped (each prefixed
    with ``"polygon"`` when a single polygon was dropped); ``fixes`` are ``Report.fixed``
    kinds for lossless normalisations.
    """
    problems: list[str] = []
    fixes: list[str] = []
    if segm is None or (isinstance(segm, (list, dict)) and len(segm) == 0):
        return None, ["no segmentation"], fixes

    if isinstance(segm, dict):  # RLE
        if "counts" not in segm or "size" not in segm:
            return None, [f"RLE without 'counts'/'size' (keys {sorted(segm)})"], fixes
        size = segm["size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(is_number(s) for s in size)):
            return None, [f"RLE with malformed size {size!r}"], fixes
        if [int(size[0]), int(size[1])] != [height, width]:
            return None, [f"RLE size {list(size)} differs from the image size [{height}, {width}]"], fixes
        counts = segm["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            if not all_numbers(counts) or min(counts, default=0) < 0 or sum(counts) != height * width:
                return None, [f"malformed uncompressed RLE (counts must sum to {height}*{width})"], fixes
            counts = mask_util.frPyObjects(
                {"size": [height, width], "counts": [int(c) for c in counts]}, height, width
            )["counts"]
            fixes.append("uncompressed RLE -> compressed")
        if isinstance(counts, bytes):
            counts = counts.decode("ascii")
            if "uncompressed RLE -> compressed" not in fixes:
                fixes.append("bytes RLE counts -> str")
        if not isinstance(counts, str):
            return None, [f"RLE counts of type {type(counts).__name__}"], fixes
        rle = {"size": [height, width], "counts": counts}
        try:
            area = float(mask_util.area(rle))
        except Exception as e:  # pycocotools raises assorted errors on garbage strings
            return None, [f"malformed compressed RLE ({e})"], fixes
        if area <= 0:
            return None, ["empty mask (RLE without foreground pixels)"], fixes
        return rle, problems, fixes

    if not isinstance(segm, list):
        return None, [f"unsupported segmentation of type {type(segm).__name__}"], fixes

    if all_numbers(segm):  # one polygon given flat, not nested
        segm = [segm]
        fixes.append("flat polygon list -> nested")
    polys = []
    for i, poly in enumerate(segm):
        if (
            isinstance(poly, list)
            and poly
            and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in poly)
        ):  # [[x, y], [x, y], ...]
            poly = [v for p in poly for v in p]
            fixes.append("point-pair polygon -> flat")
        if not isinstance(poly, (list, tuple)) or not all_numbers(poly):
            problems.append(f"polygon {i} is not a flat list of numbers")
            continue
        n = len(poly)
        if n % 2:
            problems.append(f"polygon {i} has an odd number of coordinates ({n})")
            continue
        if n < 6:
            problems.append(f"polygon {i} has {n // 2} point(s), needs at least 3")
            continue
        arr = np.asarray(poly, dtype=np.float64)
        if not np.isfinite(arr).all():
            problems.append(f"polygon {i} has non-finite coordinates")
            continue
        if polygon_area(arr[0::2], arr[1::2]) <= 1e-9:
            problems.append(f"polygon {i} has zero area")
            continue
        polys.append(arr.tolist())
    if not polys:
        return None, problems + ["no valid polygon left"], fixes
    return polys, problems, fixes


def clean_iscrowd(ann: dict, where: str, json_file: str, report: Report) -> int:
    """``iscrowd`` as int 0/1 (from bool, float, str, missing; ``ignore: 1`` -> 1), or a
    ``ValueError`` naming the file and annotation."""
    raw = ann.get("iscrowd", _MISSING)
    if raw is _MISSING or raw is None:
        report.fix("missing iscrowd -> 0")
        value = 0
    elif isinstance(raw, bool):
        report.fix("boolean iscrowd -> int")
        value = int(raw)
    elif is_number(raw) and raw in (0, 1):
        if not isinstance(raw, int):
            report.fix("float iscrowd -> int")
        value = int(raw)
    elif isinstance(raw, str) and raw.strip().lower() in ("0", "1", "true", "false"):
        report.fix("string iscrowd -> int")
        value = int(raw.strip().lower() in ("1", "true"))
    else:
        raise ValueError(f"{json_file!r}: {where}: iscrowd={raw!r} is not 0/1/true/false")
    ignore = ann.get("ignore", 0)
    if ignore and not value:
        report.fix("ignore=1 -> iscrowd=1")
        value = 1
    return value


def clean_mask(ann: dict, height: int, width: int, where: str, report: Report):
    """The cleaned ``segmentation`` of ``ann`` (see :func:`clean_segmentation`; ``None`` for a
    box-only annotation) and how many of its polygons were dropped, or ``None`` when the
    annotation is dropped (it had a segmentation and nothing usable is left)."""
    raw = ann.get("segmentation")
    if raw is None or (isinstance(raw, list) and len(raw) == 0):  # detection-style: box, no mask
        report.box_only += 1
        return None, 0
    segm, problems, fixes = clean_segmentation(raw, height, width)
    for f in fixes:
        report.fix(f)
    n_bad_polys = sum(p.startswith("polygon") for p in problems)
    if n_bad_polys:
        report.drop(D_POLY, n_bad_polys)
    if segm is None:
        report.drop(D_NOSEG)
        report.warn(f"{where}: {'; '.join(problems)} -> annotation dropped")
        return None
    if problems:
        report.warn(f"{where}: dropped degenerate {'; '.join(problems)} (kept {len(segm)} polygon(s))")
    return segm, n_bad_polys


def clean_bbox(ann: dict, segm, where: str, report: Report):
    """``[x, y, w, h]`` floats: the annotation's, or the mask's box when it is missing or
    malformed; ``None`` (annotation dropped) without any box or when w or h is not positive."""
    bbox = ann.get("bbox")
    if isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(is_number(v) and math.isfinite(v) for v in bbox):
        bbox = [float(v) for v in bbox]
    else:
        if bbox is None:
            report.fix("missing bbox computed from mask")
        else:
            report.fix("malformed bbox recomputed from mask")
            report.warn(f"{where}: malformed bbox {bbox!r} replaced by the mask's box")
        if segm is None:
            report.drop(D_NOBOX)
            report.warn(f"{where}: no valid bbox and no segmentation -> annotation dropped")
            return None
        bbox = _mask_box(segm)
    if bbox[2] <= 0 or bbox[3] <= 0:
        report.drop(D_BOX)
        report.warn(f"{where}: bbox {bbox} has zero/negative width or height -> annotation dropped")
        return None
    return bbox


def _mask_box(segm) -> list:
    """XYWH box of a cleaned segmentation (compressed RLE, or flat polygons)."""
    if isinstance(segm, dict):
        return [float(v) for v in mask_util.toBbox(segm)]
    xy = np.concatenate([np.asarray(p).reshape(-1, 2) for p in segm])
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def check_area(ann: dict, segm, n_bad_polys: int, report: Report) -> None:
    """Count an ``area`` that evaluation must not take from the json: missing or not positive,
    or made stale by dropped polygons (detectron2's conversion computes it from the mask)."""
    area = ann.get("area")
    valid = is_number(area) and math.isfinite(area) and area > 0
    if segm is None and not valid:
        report.fix("area of a box-only annotation computed from its bbox")
    elif n_bad_polys or not valid:
        report.fix("area computed from mask")
