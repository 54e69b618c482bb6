"""The public entry points: :func:`load_coco_instances` (dataset dicts) and
:func:`register_coco_instances` (detectron2's catalogs, loaded lazily)."""
from __future__ import annotations

import functools
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .parse import Parsed, parse_coco_json

__all__ = ["load_coco_instances", "register_coco_instances"]

logger = logging.getLogger(__name__)

_MISSING = object()


def _check_paths(json_file: str, image_root: str) -> None:
    if not os.path.exists(json_file):
        raise FileNotFoundError(f"COCO json file not found: {json_file!r}")
    if os.path.isdir(json_file):
        raise IsADirectoryError(f"COCO json file {json_file!r} is a directory, expected a .json file")
    if image_root != "" and not os.path.isdir(image_root):
        what = "is not a directory" if os.path.exists(image_root) else "does not exist"
        raise FileNotFoundError(f"image_root {image_root!r} (images of {json_file!r}) {what}")


def _evaluation(parsed: Parsed) -> str:
    """How COCOEvaluator gets the ground truth, for the log line."""
    if parsed.changed:
        return "evaluation converts the cleaned dicts (into the evaluator's output folder)"
    return "evaluation reads the json as is"


def _set_metadata(name: str, json_file: str, image_root: str, parsed: Parsed) -> None:
    """Fill ``MetadataCatalog.get(name)``. ``json_file`` only when the dicts say what the json
    says: else detectron2's ``COCOEvaluator`` converts the dicts (``convert_to_coco_json``,
    mapping the classes back through ``thing_dataset_id_to_contiguous_id``)."""
    meta = MetadataCatalog.get(name)
    values = {
        "thing_classes": parsed.thing_classes,
        "thing_dataset_id_to_contiguous_id": parsed.id_map,
        "image_root": image_root,
        "evaluator_type": "coco",
    }
    if not parsed.changed:
        values["json_file"] = os.path.abspath(json_file)
    for key, val in values.items():
        old = meta.get(key, _MISSING)
        if old is _MISSING:
            setattr(meta, key, val)
        elif old != val:
            if key in ("thing_classes", "thing_dataset_id_to_contiguous_id"):
                raise RuntimeError(
                    f"dataset {name!r}: {key} read from {json_file!r} ({val!r}) differs from "
                    f"the registered metadata ({old!r}); did the json change since it was registered? "
                    f"Re-register it with register_coco_instances."
                )
            logger.warning("dataset %r: keeping metadata %s=%r (loader computed %r)", name, key, old, val)


def load_coco_instances(json_file: str, image_root: str, dataset_name: str | None = None) -> list[dict]:
    """Load a COCO instances json into detectron2 dataset dicts, handling real-world quirks.

    Args:
        json_file: path of the COCO json.
        image_root: directory the images' ``file_name`` are relative to (``""``: use them as is).
        dataset_name: when given, also fill ``MetadataCatalog.get(dataset_name)``
            (thing_classes, thing_dataset_id_to_contiguous_id, image_root, evaluator_type, and
            json_file when nothing had to be dropped or fixed).

    Returns:
        list of dicts with ``file_name``, ``height``, ``width``, ``image_id`` and ``annotations``
        (each with ``bbox`` (XYWH_ABS), ``bbox_mode``, contiguous ``category_id``,
        ``segmentation`` (flat polygons or compressed RLE with str counts) and int ``iscrowd``),
        sorted by image id. See the package docstring for what each quirk does.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    _check_paths(json_file, image_root)
    parsed = parse_coco_json(json_file, image_root, verbose=True)
    if dataset_name is not None:
        _set_metadata(dataset_name, json_file, image_root, parsed)
    logger.info("Loaded COCO json %s: %s", json_file, parsed.summary)
    return parsed.dataset_dicts


def register_coco_instances(name: str, json_file: str, image_root: str) -> None:
    """Register a COCO-format dataset (drop-in for detectron2's function of the same name).

    The json is read now (missing files and malformed json raise here, not at training
    time); the dataset dicts are loaded lazily by ``DatasetCatalog.get(name)`` via
    :func:`load_coco_instances`. Metadata: ``thing_classes``,
    ``thing_dataset_id_to_contiguous_id``, ``image_root``, ``evaluator_type="coco"``, and
    ``json_file`` only when the json needed no cleaning (else the evaluator converts the
    dicts). Nothing is written. Re-registering a name replaces it.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    _check_paths(json_file, image_root)
    parsed = parse_coco_json(json_file, image_root, verbose=False)  # warnings come with the load

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, functools.partial(load_coco_instances, json_file, image_root, name))
    _set_metadata(name, json_file, image_root, parsed)
    logger.info("Registered COCO dataset %r from %s: %s; %s", name, json_file, parsed.summary, _evaluation(parsed))
