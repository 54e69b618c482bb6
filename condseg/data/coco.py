"""COCO-format instance datasets, with the quirks of real-world json handled deliberately.

``register_coco_instances(name, json_file, image_root)`` is a drop-in for detectron2's
function of the same name; ``load_coco_instances`` returns detectron2 dataset dicts.
Unlike ``pycocotools.COCO`` / ``detectron2.data.datasets.load_coco_json`` (which
silently accept, drop or crash on these), every quirk below is handled on purpose:

* non-contiguous category ids (3, 7, 42, ...) -> contiguous ``0..K-1`` in the dicts,
  sorted by id; ``thing_dataset_id_to_contiguous_id`` in the metadata maps them back;
* categories without annotations are kept as classes;
* ``iscrowd`` given as a boolean (or missing, or ``"0"``/``"1"``) -> int; ``ignore: 1``
  -> ``iscrowd: 1`` (both mean "do not train on it, do not count it in evaluation");
* annotation fields the model does not use (``keypoints``, ``attributes`` ...) are dropped:
  a dict's annotation holds exactly ``bbox``, ``bbox_mode``, ``category_id``,
  ``segmentation``, ``iscrowd``;
* images without annotations are kept (``annotations: []``); detectron2's
  ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` drops them for training;
* masks: polygons (also a flat list of numbers, or a list of ``[x, y]`` pairs), compressed
  RLE (``str`` or ``bytes`` counts -> ``str``) and uncompressed RLE (list counts ->
  compressed with ``pycocotools.mask.frPyObjects``); an RLE whose ``size`` is not the
  image's, or whose mask is empty, is dropped with a warning;
* degenerate polygons (fewer than 3 points, odd length, non-finite or zero area) are
  dropped with a warning naming the file, image id and annotation id; an annotation left
  without any polygon is dropped with a warning; one with no segmentation at all is
  kept as a box-only (detection) annotation, without a ``segmentation`` key;
* missing / malformed ``bbox`` -> computed from the mask; zero or negative width/height ->
  annotation dropped with a warning; missing ``area`` -> computed from the mask;
* missing annotation ids are assigned; annotations on unknown images are dropped with a
  warning; missing image ``height``/``width`` are read from the image file;
* hard errors, each naming the file and the offending id: ``category_id`` not in
  ``categories``, duplicate image / annotation / category ids, a json that is not COCO
  (missing ``images``/``annotations``/``categories``), an ``iscrowd`` that is not 0/1;
  ``FileNotFoundError`` for a missing json file or ``image_root`` directory.

Per-item warnings are logged one line each up to ``_MAX_WARNINGS``, then summarised with
counts; every load logs a one-line summary on the logger ``condseg.data.coco``.

Evaluation: detectron2's ``COCOEvaluator`` reads ``metadata.json_file`` with pycocotools.
When the raw json would break it or disagree with the training dicts (dropped
annotations or polygons, boolean/missing ``iscrowd``, uncompressed RLE, missing
``bbox``/``area`` ...), a sanitised copy holding exactly the annotations of the dicts
(original category ids, int ``iscrowd``, compressed RLE, ``bbox`` and ``area`` always
present) is written to ``{dirname(json)}/.condseg_cache/`` -- or, if that is not
writable, ``$XDG_CACHE_HOME/condseg`` (``~/.cache/condseg``), then the temp dir -- under a
name keyed by the source's path, mtime and size, and ``metadata.json_file`` points at it.
A clean json is used as is.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import numbers
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

__all__ = ["load_coco_instances", "register_coco_instances"]

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1  # bump when the sanitised output changes for the same input
_CACHE_SUBDIR = ".condseg_cache"
_MAX_WARNINGS = 10  # per-item warning lines per load; the rest go into a summary count
_REQUIRED_KEYS = ("images", "annotations", "categories")
_STANDARD_ANN_KEYS = {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation", "ignore"}
_MISSING = object()

# kinds of dropped items (summary keys)
_D_POLY = "degenerate polygon"
_D_NOSEG = "annotation without valid segmentation"
_D_BOX = "annotation with zero/negative-size bbox"
_D_IMG = "annotation on an unknown image"
_D_NOBOX = "annotation without bbox or segmentation"


def _dataset_annotation(a: dict, id_map: dict) -> dict:
    """detectron2 annotation dict of a cleaned annotation; box-only ones have no ``segmentation``."""
    out = {
        "bbox": a["bbox"],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": id_map[a["category_id"]],
        "iscrowd": a["iscrowd"],
    }
    if a["segmentation"] is not None:
        out["segmentation"] = a["segmentation"]
    return out


# ----------------------------------------------------------------------------- reporting
class _Report:
    """Collects what was dropped / fixed; logs per-item lines up to ``_MAX_WARNINGS``."""

    def __init__(self, json_file: str, verbose: bool):
        self.json_file = json_file
        self.verbose = verbose
        self.dropped: Counter = Counter()
        self.fixed: Counter = Counter()
        self.unused_keys: Counter = Counter()
        self.box_only = 0  # annotations with a box and no mask (detection datasets)
        self.lines = 0

    def warn(self, msg: str) -> None:
        self.lines += 1
        if self.verbose and self.lines <= _MAX_WARNINGS:
            logger.warning("%s: %s", self.json_file, msg)

    def drop(self, kind: str, n: int = 1) -> None:
        self.dropped[kind] += n

    def fix(self, kind: str, n: int = 1) -> None:
        self.fixed[kind] += n

    def close(self) -> None:
        if self.verbose and self.lines > _MAX_WARNINGS:
            logger.warning(
                "%s: %d more problem(s) not shown individually; in total dropped %s",
                self.json_file,
                self.lines - _MAX_WARNINGS,
                _fmt_counts(self.dropped) or "nothing",
            )

    @property
    def changed(self) -> bool:
        """True when the dicts differ from the raw json in a way evaluation would see."""
        return bool(self.dropped or self.fixed)


def _fmt_counts(counter: Counter) -> str:
    return ", ".join(f"{n} x {k}" for k, n in sorted(counter.items()))


# ------------------------------------------------------------------------ small helpers
_FAST_NUMBER_TYPES = (int, float)  # what json gives; checked by exact type first (speed)


def _is_number(x: Any) -> bool:
    t = type(x)
    if t is float or t is int:
        return True
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _all_numbers(values) -> bool:
    return all(type(v) in _FAST_NUMBER_TYPES for v in values) or all(_is_number(v) for v in values)


def _sorted_ids(ids):
    ids = list(ids)
    try:
        return sorted(ids)
    except TypeError:  # mixed id types: keep the json's order
        return ids


def _check_paths(json_file: str, image_root: str) -> None:
    if not os.path.exists(json_file):
        raise FileNotFoundError(f"COCO json file not found: {json_file!r}")
    if os.path.isdir(json_file):
        raise IsADirectoryError(f"COCO json file {json_file!r} is a directory, expected a .json file")
    if image_root != "" and not os.path.isdir(image_root):
        what = "is not a directory" if os.path.exists(image_root) else "does not exist"
        raise FileNotFoundError(
            f"image_root {image_root!r} (images of {json_file!r}) {what}"
        )


def _read_coco_json(json_file: str) -> dict:
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file!r} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"{json_file!r} is not a COCO instances json: its top level is a {type(data).__name__}, "
            f"expected an object with keys {list(_REQUIRED_KEYS)}"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(
            f"{json_file!r} is not a COCO instances json: missing key(s) {missing} "
            f"(a COCO json needs {list(_REQUIRED_KEYS)}; present: {sorted(data)[:10]})"
        )
    for k in _REQUIRED_KEYS:
        if not isinstance(data[k], list):
            raise ValueError(f"{json_file!r}: {k!r} must be a list, got {type(data[k]).__name__}")
    return data


def _image_size_from_file(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    return h, w


def _polygon_area(arr: np.ndarray) -> float:
    x, y = arr[0::2], arr[1::2]  # shoelace
    s = np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) + x[-1] * y[0] - x[0] * y[-1]
    return 0.5 * abs(float(s))


def _mask_rle(segm, height: int, width: int) -> dict:
    """Compressed RLE of a cleaned segmentation (polygons or RLE dict with str counts)."""
    if isinstance(segm, dict):
        return segm
    return mask_util.merge(mask_util.frPyObjects(segm, height, width))


# --------------------------------------------------------------------- segmentation
def _clean_segmentation(segm, height: int, width: int):
    """Normalise one annotation's ``segmentation``.

    Returns ``(segmentation, problems, fixes)``: ``segmentation`` is a list of flat float
    polygons or a compressed RLE dict with ``str`` counts, or ``None`` when nothing usable
    is left; ``problems`` are human-readable reasons for what was dropped (each prefixed
    with ``"polygon"`` when a single polygon was dropped); ``fixes`` are ``_Report.fixed``
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
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_number(s) for s in size)):
            return None, [f"RLE with malformed size {size!r}"], fixes
        if [int(size[0]), int(size[1])] != [height, width]:
            return None, [f"RLE size {list(size)} differs from the image size [{height}, {width}]"], fixes
        counts = segm["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            if not _all_numbers(counts) or min(counts, default=0) < 0 or sum(counts) != height * width:
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

    if _all_numbers(segm):  # one polygon given flat, not nested
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
        if not isinstance(poly, (list, tuple)) or not _all_numbers(poly):
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
        if _polygon_area(arr) <= 1e-9:
            problems.append(f"polygon {i} has zero area")
            continue
        polys.append(arr.tolist())
    if not polys:
        return None, problems + ["no valid polygon left"], fixes
    return polys, problems, fixes


def _clean_iscrowd(ann: dict, where: str, json_file: str, report: _Report) -> int:
    raw = ann.get("iscrowd", _MISSING)
    if raw is _MISSING or raw is None:
        report.fix("missing iscrowd -> 0")
        value = 0
    elif isinstance(raw, bool):
        report.fix("boolean iscrowd -> int")
        value = int(raw)
    elif _is_number(raw) and raw in (0, 1):
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


# ---------------------------------------------------------------------------- parsing
@dataclass
class _Parsed:
    dataset_dicts: list
    thing_classes: list
    id_map: dict
    eval_json: dict | None  # the sanitised COCO json, or None when the raw one is fine
    summary: str
    report: _Report = field(repr=False)


def _parse(json_file: str, image_root: str, verbose: bool = True) -> _Parsed:
    data = _read_coco_json(json_file)
    report = _Report(json_file, verbose)

    # categories: contiguous ids in order of the original ids (what detectron2 does)
    cats: dict = {}
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c:
            raise ValueError(f"{json_file!r}: category entry without 'id': {c!r}")
        if c["id"] in cats:
            raise ValueError(f"{json_file!r}: duplicate category id {c['id']!r} in 'categories'")
        cats[c["id"]] = c
    if not cats:
        raise ValueError(f"{json_file!r}: 'categories' is empty; at least one category is needed")
    cat_ids = _sorted_ids(cats)
    id_map = {cid: i for i, cid in enumerate(cat_ids)}
    thing_classes = [str(cats[cid].get("name", cid)) for cid in cat_ids]

    # images
    images: dict = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im:
            raise ValueError(f"{json_file!r}: image entry without 'id': {im!r}")
        iid = im["id"]
        if iid in images:
            raise ValueError(f"{json_file!r}: duplicate image id {iid!r} in 'images'")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise ValueError(f"{json_file!r}: image {iid!r} has no 'file_name'")
        im = dict(im)
        h, w = im.get("height"), im.get("width")
        if not (_is_number(h) and _is_number(w) and h > 0 and w > 0):
            path = os.path.join(image_root, im["file_name"])
            try:
                h, w = _image_size_from_file(path)
            except OSError as e:
                raise ValueError(
                    f"{json_file!r}: image {iid!r} has no valid height/width and its file "
                    f"{path!r} cannot be read to get them: {e}"
                ) from e
            report.fix("image size read from file")
        elif not (isinstance(h, int) and isinstance(w, int)):
            report.fix("float image size -> int")
        im["height"], im["width"] = int(h), int(w)
        images[iid] = im
    image_ids = _sorted_ids(images)

    # annotation ids: duplicates are an error, missing ones are assigned
    anns = data["annotations"]
    seen_ids: set = set()
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise ValueError(f"{json_file!r}: annotation #{k} is a {type(ann).__name__}, not an object")
        aid = ann.get("id")
        if aid is None:
            continue
        if aid in seen_ids:
            raise ValueError(f"{json_file!r}: duplicate annotation id {aid!r}")
        seen_ids.add(aid)
    next_id = max([a for a in seen_ids if _is_number(a)], default=0)

    per_image: dict = {iid: [] for iid in images}
    for ann in anns:
        aid = ann.get("id")
        if aid is None:
            next_id = int(next_id) + 1
            aid = next_id
            report.fix("annotation id assigned")
        iid = ann.get("image_id")
        where = f"image {iid!r}, annotation {aid!r}"
        cid = ann.get("category_id", _MISSING)
        if cid is _MISSING or cid not in cats:
            raise ValueError(
                f"{json_file!r}: annotation {aid!r} (image {iid!r}) has category_id "
                f"{'<missing>' if cid is _MISSING else repr(cid)}, which is not in 'categories' "
                f"(ids: {cat_ids[:20]}{' ...' if len(cat_ids) > 20 else ''})"
            )
        if iid not in images:
            report.drop(_D_IMG)
            report.warn(f"{where}: image id not in 'images', annotation dropped")
            continue
        for key in ann:
            if key not in _STANDARD_ANN_KEYS:
                report.unused_keys[key] += 1
        img = images[iid]
        h, w = img["height"], img["width"]
        iscrowd = _clean_iscrowd(ann, where, json_file, report)

        raw_segm = ann.get("segmentation")
        box_only = raw_segm is None or (isinstance(raw_segm, list) and len(raw_segm) == 0)
        if box_only:  # detection-style annotation: kept, with its box and no mask
            segm, problems, fixes = None, [], []
            report.box_only += 1
        else:
            segm, problems, fixes = _clean_segmentation(raw_segm, h, w)
        for f in fixes:
            report.fix(f)
        n_bad_polys = sum(p.startswith("polygon") for p in problems)
        if n_bad_polys:
            report.drop(_D_POLY, n_bad_polys)
        if segm is None and not box_only:
            report.drop(_D_NOSEG)
            report.warn(f"{where}: {'; '.join(problems)} -> annotation dropped")
            continue
        if problems:
            report.warn(
                f"{where}: dropped degenerate {'; '.join(problems)} (kept {len(segm)} polygon(s))"
            )

        bbox = ann.get("bbox")
        if isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(
            _is_number(v) and math.isfinite(v) for v in bbox
        ):
            bbox = [float(v) for v in bbox]
        else:
            if bbox is None:
                report.fix("missing bbox computed from mask")
            else:
                report.fix("malformed bbox recomputed from mask")
                report.warn(f"{where}: malformed bbox {bbox!r} replaced by the mask's box")
            if segm is None:
                report.drop(_D_NOBOX)
                report.warn(f"{where}: no valid bbox and no segmentation -> annotation dropped")
                continue
            if isinstance(segm, dict):
                bbox = [float(v) for v in mask_util.toBbox(segm)]
            else:
                xy = np.concatenate([np.asarray(p).reshape(-1, 2) for p in segm])
                x0, y0 = xy.min(axis=0)
                x1, y1 = xy.max(axis=0)
                bbox = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
        if bbox[2] <= 0 or bbox[3] <= 0:
            report.drop(_D_BOX)
            report.warn(f"{where}: bbox {bbox} has zero/negative width or height -> annotation dropped")
            continue

        area = ann.get("area")
        if segm is None and not (_is_number(area) and math.isfinite(area) and area > 0):
            area = bbox[2] * bbox[3]
            report.fix("area of a box-only annotation computed from its bbox")
        elif n_bad_polys or not (_is_number(area) and math.isfinite(area) and area > 0):
            area = float(mask_util.area(_mask_rle(segm, h, w)))
            report.fix("area computed from mask")
        else:
            area = float(area)

        per_image[iid].append(
            {
                "id": aid,
                "image_id": iid,
                "category_id": cid,
                "bbox": bbox,
                "area": area,
                "iscrowd": iscrowd,
                "segmentation": segm,
            }
        )
    report.close()

    dataset_dicts = []
    for iid in image_ids:
        img = images[iid]
        dataset_dicts.append(
            {
                "file_name": os.path.join(image_root, img["file_name"]),
                "height": img["height"],
                "width": img["width"],
                "image_id": iid,
                "annotations": [_dataset_annotation(a, id_map) for a in per_image[iid]],
            }
        )

    eval_json = None
    if report.changed:
        info = dict(data.get("info") or {}) if isinstance(data.get("info"), dict) else {}
        info["condseg_sanitised_from"] = os.path.abspath(json_file)
        eval_json = {
            "info": info,
            "licenses": data.get("licenses", []),
            "images": [images[iid] for iid in image_ids],
            "annotations": [
                a if a["segmentation"] is not None else {k: v for k, v in a.items() if k != "segmentation"}
                for iid in image_ids
                for a in per_image[iid]
            ],
            "categories": data["categories"],
        }

    # one-line summary
    n_anns = sum(len(v) for v in per_image.values())
    n_crowd = sum(a["iscrowd"] for v in per_image.values() for a in v)
    n_empty_imgs = sum(1 for v in per_image.values() if not v)
    used = {a["category_id"] for v in per_image.values() for a in v}
    unused = [str(cats[c].get("name", c)) for c in cat_ids if c not in used]
    classes = f"{len(cat_ids)} classes"
    if unused:
        more = " ..." if len(unused) > 5 else ""
        classes += f" ({len(unused)} without annotations: {', '.join(unused[:5])}{more})"
    parts = [
        f"{len(images)} images ({n_empty_imgs} without annotations)",
        f"{n_anns} annotations ({n_crowd} crowd)",
        classes,
    ]
    if cat_ids != list(range(1, len(cat_ids) + 1)) and cat_ids != list(range(len(cat_ids))):
        parts.append("non-contiguous category ids mapped to 0..K-1")
    if report.box_only:
        parts.append(f"{report.box_only} box-only annotation(s) without mask")
    parts.append(f"dropped: {_fmt_counts(report.dropped) or 'nothing'}")
    if report.fixed:
        parts.append(f"fixed: {_fmt_counts(report.fixed)}")
    if report.unused_keys:
        parts.append(f"unused annotation fields ignored: {', '.join(sorted(report.unused_keys))}")
    summary = "; ".join(parts)
    return _Parsed(dataset_dicts, thing_classes, id_map, eval_json, summary, report)


# ----------------------------------------------------------------------------- caching
def _cache_name(json_file: str, image_root: str) -> str:
    st = os.stat(json_file)
    key = "|".join(
        [
            str(_CACHE_VERSION),
            os.path.realpath(json_file),
            str(st.st_mtime_ns),
            str(st.st_size),
            os.path.realpath(image_root) if image_root else "",
        ]
    )
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(os.path.basename(json_file))[0])
    return f"{stem}.{digest}"


def _cache_dirs(json_file: str) -> list[str]:
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [
        os.path.join(os.path.dirname(os.path.abspath(json_file)), _CACHE_SUBDIR),
        os.path.join(xdg, "condseg"),
        os.path.join(tempfile.gettempdir(), "condseg_cache"),
    ]


def _dir_is_writable(d: str) -> bool:
    try:
        os.makedirs(d, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def _atomic_write_json(path: str, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared with other users
        os.replace(tmp, path)  # atomic: concurrent processes (multi-GPU) never see half a file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_cached_meta(json_file: str, image_root: str) -> dict | None:
    """The cached metadata for this exact source file, or None."""
    name = _cache_name(json_file, image_root)
    for d in _cache_dirs(json_file):
        path = os.path.join(d, name + ".meta.json")
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("version") != _CACHE_VERSION or not os.path.isfile(meta["json_file"]):
                continue
            meta["id_map"] = {k: v for k, v in meta["id_map"]}
            return meta
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _write_eval_files(json_file: str, image_root: str, parsed: _Parsed) -> dict:
    """Write the sanitised json (if needed) and the metadata sidecar; return the metadata."""
    name = _cache_name(json_file, image_root)
    dirs = _cache_dirs(json_file)
    eval_path = os.path.abspath(json_file)
    if parsed.eval_json is not None:
        existing = [os.path.join(d, name + ".json") for d in dirs]
        existing = [p for p in existing if os.path.isfile(p)]
        if existing:
            eval_path = existing[0]
        else:
            writable = next((d for d in dirs if _dir_is_writable(d)), None)
            if writable is None:
                raise OSError(f"no writable cache directory for the sanitised copy of {json_file!r}: {dirs}")
            eval_path = os.path.join(writable, name + ".json")
            _atomic_write_json(eval_path, parsed.eval_json)
            logger.info("Wrote sanitised COCO json for evaluation: %s", eval_path)
    meta = {
        "version": _CACHE_VERSION,
        "source": os.path.abspath(json_file),
        "json_file": eval_path,
        "thing_classes": parsed.thing_classes,
        "id_map": parsed.id_map,
        "summary": parsed.summary,
    }
    sidecar_dir = os.path.dirname(eval_path) if parsed.eval_json is not None else None
    if sidecar_dir is None:
        sidecar_dir = next((d for d in dirs if _dir_is_writable(d)), None)
    if sidecar_dir is not None:  # the sidecar is only a speed-up; no writable dir is fine
        try:
            _atomic_write_json(
                os.path.join(sidecar_dir, name + ".meta.json"),
                dict(meta, id_map=[[k, v] for k, v in parsed.id_map.items()]),
            )
        except OSError as e:
            logger.debug("could not write the metadata cache for %s: %s", json_file, e)
    return meta


def _set_metadata(name: str, *, json_file: str, image_root: str, source_json_file: str,
                  thing_classes: list, id_map: dict) -> None:
    meta = MetadataCatalog.get(name)
    values = {
        "thing_classes": thing_classes,
        "thing_dataset_id_to_contiguous_id": id_map,
        "json_file": json_file,
        "image_root": image_root,
        "source_json_file": source_json_file,
        "evaluator_type": "coco",
    }
    for key, val in values.items():
        old = meta.get(key, _MISSING)
        if old is _MISSING:
            setattr(meta, key, val)
        elif old != val:
            if key in ("thing_classes", "thing_dataset_id_to_contiguous_id"):
                raise RuntimeError(
                    f"dataset {name!r}: {key} read from {source_json_file!r} ({val!r}) differs from "
                    f"the registered metadata ({old!r}); did the json change since it was registered? "
                    f"Re-register it with register_coco_instances."
                )
            logger.warning("dataset %r: keeping metadata %s=%r (loader computed %r)", name, key, old, val)


# ---------------------------------------------------------------------------- public API
def load_coco_instances(json_file: str, image_root: str, dataset_name: str | None = None) -> list[dict]:
    """Load a COCO instances json into detectron2 dataset dicts, handling real-world quirks.

    Args:
        json_file: path of the COCO json.
        image_root: directory the images' ``file_name`` are relative to (``""``: use them as is).
        dataset_name: when given, also fill ``MetadataCatalog.get(dataset_name)`` (thing_classes,
            thing_dataset_id_to_contiguous_id, json_file (sanitised copy if needed), image_root,
            evaluator_type) and write the sanitised json for evaluation if one is needed.

    Returns:
        list of dicts with ``file_name``, ``height``, ``width``, ``image_id`` and ``annotations``
        (each with ``bbox`` (XYWH_ABS), ``bbox_mode``, contiguous ``category_id``,
        ``segmentation`` (flat polygons or compressed RLE with str counts) and int ``iscrowd``),
        sorted by image id. See the module docstring for what each quirk does.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    _check_paths(json_file, image_root)
    parsed = _parse(json_file, image_root, verbose=True)
    line = f"Loaded COCO json {json_file}: {parsed.summary}"
    if dataset_name is not None:
        meta = _write_eval_files(json_file, image_root, parsed)
        _set_metadata(
            dataset_name,
            json_file=meta["json_file"],
            image_root=image_root,
            source_json_file=json_file,
            thing_classes=parsed.thing_classes,
            id_map=parsed.id_map,
        )
        if parsed.eval_json is not None:
            line += f"; evaluation json: {meta['json_file']}"
    logger.info(line)
    return parsed.dataset_dicts


def register_coco_instances(name: str, json_file: str, image_root: str) -> None:
    """Register a COCO-format dataset (drop-in for detectron2's function of the same name).

    The json is checked now (missing files and malformed json raise here, not at training
    time) and, if needed, its sanitised copy for evaluation is written; the dataset dicts
    are loaded lazily by ``DatasetCatalog.get(name)`` via :func:`load_coco_instances`.
    Metadata: ``thing_classes``, ``thing_dataset_id_to_contiguous_id``, ``json_file``
    (sanitised copy if needed), ``image_root``, ``evaluator_type="coco"`` and
    ``source_json_file`` (the json as given). Re-registering a name replaces it.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    _check_paths(json_file, image_root)
    meta = _read_cached_meta(json_file, image_root)
    if meta is None:
        # per-item warnings are logged when the dicts are loaded, not twice
        meta = _write_eval_files(json_file, image_root, _parse(json_file, image_root, verbose=False))

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, functools.partial(load_coco_instances, json_file, image_root, name))
    _set_metadata(
        name,
        json_file=meta["json_file"],
        image_root=image_root,
        source_json_file=json_file,
        thing_classes=meta["thing_classes"],
        id_map=meta["id_map"],
    )
    logger.info(
        "Registered COCO dataset %r from %s: %s; evaluation json: %s",
        name, json_file, meta["summary"], meta["json_file"],
    )
