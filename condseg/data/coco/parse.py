"""Reading a COCO instances json into detectron2 dataset dicts: categories, images and
annotations checked (hard errors name the file and the id), each annotation cleaned
(:mod:`.clean`), and a one-line summary of what was dropped and fixed."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from detectron2.structures import BoxMode

from .clean import check_area, clean_bbox, clean_iscrowd, clean_mask, is_number
from .report import D_IMG, Report, fmt_counts

__all__ = ["Parsed", "parse_coco_json"]

_REQUIRED_KEYS = ("images", "annotations", "categories")
_STANDARD_ANN_KEYS = {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation", "ignore"}
_MISSING = object()


@dataclass
class Parsed:
    dataset_dicts: list
    thing_classes: list
    id_map: dict  # dataset category id -> contiguous 0..K-1
    changed: bool  # the dicts differ from the raw json in what evaluation sees
    summary: str


def parse_coco_json(json_file: str, image_root: str, verbose: bool = True) -> Parsed:
    """The dataset dicts of ``json_file`` (see :func:`..load_coco_instances`); ``verbose``
    logs the per-item warnings."""
    data = _read_coco_json(json_file)
    report = Report(json_file, verbose)
    cats = _categories(data["categories"], json_file)
    cat_ids = _sorted_ids(cats)  # contiguous ids in order of the original ids (what detectron2 does)
    id_map = {cid: i for i, cid in enumerate(cat_ids)}
    images = _images(data["images"], json_file, image_root, report)

    per_image: dict = {iid: [] for iid in images}
    next_id = _last_annotation_id(data["annotations"], json_file)
    for ann in data["annotations"]:
        aid = ann.get("id")
        if aid is None:
            next_id = int(next_id) + 1
            aid = next_id
            report.fix("annotation id assigned")
        cleaned = _clean_annotation(ann, aid, id_map, images, json_file, report)
        if cleaned is not None:
            per_image[ann["image_id"]].append(cleaned)
    report.close()

    dataset_dicts = []
    for iid in _sorted_ids(images):
        img = images[iid]
        dataset_dicts.append(
            {
                "file_name": os.path.join(image_root, img["file_name"]),
                "height": img["height"],
                "width": img["width"],
                "image_id": iid,
                "annotations": per_image[iid],
            }
        )
    summary = _summary(images, per_image, cats, cat_ids, id_map, report)
    return Parsed(dataset_dicts, [str(cats[c].get("name", c)) for c in cat_ids], id_map, report.changed, summary)


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


def _sorted_ids(ids):
    ids = list(ids)
    try:
        return sorted(ids)
    except TypeError:  # mixed id types: keep the json's order
        return ids


def _categories(categories: list, json_file: str) -> dict:
    """id -> category entry; duplicate or missing ids are errors."""
    cats: dict = {}
    for c in categories:
        if not isinstance(c, dict) or "id" not in c:
            raise ValueError(f"{json_file!r}: category entry without 'id': {c!r}")
        if c["id"] in cats:
            raise ValueError(f"{json_file!r}: duplicate category id {c['id']!r} in 'categories'")
        cats[c["id"]] = c
    if not cats:
        raise ValueError(f"{json_file!r}: 'categories' is empty; at least one category is needed")
    return cats


def _images(entries: list, json_file: str, image_root: str, report: Report) -> dict:
    """id -> image entry with int ``height``/``width`` (read from the file when missing)."""
    images: dict = {}
    for im in entries:
        if not isinstance(im, dict) or "id" not in im:
            raise ValueError(f"{json_file!r}: image entry without 'id': {im!r}")
        iid = im["id"]
        if iid in images:
            raise ValueError(f"{json_file!r}: duplicate image id {iid!r} in 'images'")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise ValueError(f"{json_file!r}: image {iid!r} has no 'file_name'")
        im = dict(im)
        h, w = im.get("height"), im.get("width")
        if not (is_number(h) and is_number(w) and h > 0 and w > 0):
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
    return images


def _image_size_from_file(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    return h, w


def _last_annotation_id(anns: list, json_file: str):
    """The largest numeric annotation id (0 if none), after checking that ids are unique;
    missing ids are assigned from there on."""
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
    return max([a for a in seen_ids if is_number(a)], default=0)


def _clean_annotation(ann: dict, aid, id_map: dict, images: dict, json_file: str, report: Report):
    """detectron2 annotation dict of ``ann`` (contiguous ``category_id``; box-only ones have no
    ``segmentation``), or ``None`` when it is dropped."""
    iid = ann.get("image_id")
    where = f"image {iid!r}, annotation {aid!r}"
    cid = ann.get("category_id", _MISSING)
    if cid is _MISSING or cid not in id_map:
        cat_ids = list(id_map)
        raise ValueError(
            f"{json_file!r}: annotation {aid!r} (image {iid!r}) has category_id "
            f"{'<missing>' if cid is _MISSING else repr(cid)}, which is not in 'categories' "
            f"(ids: {cat_ids[:20]}{' ...' if len(cat_ids) > 20 else ''})"
        )
    if iid not in images:
        report.drop(D_IMG)
        report.warn(f"{where}: image id not in 'images', annotation dropped")
        return None
    for key in ann:
        if key not in _STANDARD_ANN_KEYS:
            report.unused_keys[key] += 1
    iscrowd = clean_iscrowd(ann, where, json_file, report)
    mask = clean_mask(ann, images[iid]["height"], images[iid]["width"], where, report)
    if mask is None:
        return None
    segm, n_bad_polys = mask
    bbox = clean_bbox(ann, segm, where, report)
    if bbox is None:
        return None
    check_area(ann, segm, n_bad_polys, report)
    out = {"bbox": bbox, "bbox_mode": BoxMode.XYWH_ABS, "category_id": id_map[cid], "iscrowd": iscrowd}
    if segm is not None:
        out["segmentation"] = segm
    return out


def _summary(images: dict, per_image: dict, cats: dict, cat_ids: list, id_map: dict, report: Report) -> str:
    """One line: images, annotations, classes, and what was dropped and fixed."""
    n_anns = sum(len(v) for v in per_image.values())
    n_crowd = sum(a["iscrowd"] for v in per_image.values() for a in v)
    n_empty_imgs = sum(1 for v in per_image.values() if not v)
    used = {a["category_id"] for v in per_image.values() for a in v}  # contiguous ids
    unused = [str(cats[c].get("name", c)) for c in cat_ids if id_map[c] not in used]
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
    parts.append(f"dropped: {fmt_counts(report.dropped) or 'nothing'}")
    if report.fixed:
        parts.append(f"fixed: {fmt_counts(report.fixed)}")
    if report.unused_keys:
        parts.append(f"unused annotation fields ignored: {', '.join(sorted(report.unused_keys))}")
    return "; ".join(parts)
