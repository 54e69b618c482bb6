"""What an exported file says about itself: ONNX ``metadata_props`` (string to string).

Keys (values are strings; lists and numbers JSON-encoded):

* ``condseg_export``: the format version, :data:`EXPORT_VERSION` (its presence marks a
  condseg export);
* ``meta_architecture``: ``FCOSDetector`` or ``CondInst``;
* ``class_names``: JSON list, index = class id (the names the weights were trained on
  when their checkpoint has them, :mod:`condseg.checkpoint.classes`; else the dataset's
  ``thing_classes`` of ``DATASETS.TEST[0]`` when registered; padded with ``"0" .. "K-1"``);
* ``weights_classes``: JSON, the weights' class entry (names, category ids, training
  datasets; :mod:`condseg.checkpoint.classes`), only when the weights have one;
* ``input_format``: ``INPUT.FORMAT`` (channel order the image must be in, e.g. ``BGR``);
* ``min_size_test`` / ``max_size_test``: ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, the
  ``ResizeShortestEdge`` the caller applies first;
* ``input_dtype``: ``uint8`` or ``float32``;
* ``static_size``: JSON ``[H, W]`` or ``null``; ``max_detections``: JSON int or ``null``;
* ``outputs``: JSON list of the output names, in order;
* CondInst only: ``mask_resolution``, ``input`` or ``stride`` (see
  :class:`~condseg.export.wrapper.ExportableModel`); ``mask_stride`` and
  ``size_divisibility``, JSON ints: the stride of ``stride`` masks
  (``MODEL.CONDINST.MASK_OUT_STRIDE``) and the multiple the input is padded to;
* ``config``: the full config, ``cfg.dump()`` (yaml).
"""
import json
from typing import Dict, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from condseg.checkpoint.classes import padded_names

__all__ = ["EXPORT_VERSION", "MARKER", "WEIGHTS_CLASSES", "class_names_of", "config_metadata", "export_metadata",
           "parse_metadata"]

MARKER = "condseg_export"
EXPORT_VERSION = "1"
WEIGHTS_CLASSES = "weights_classes"
_JSON_KEYS = ("class_names", "min_size_test", "max_size_test", "static_size", "max_detections", "outputs",
              "mask_stride", "size_divisibility", WEIGHTS_CLASSES)


def config_metadata(cfg):
    """``cfg.DATASETS.TEST[0]``'s metadata when that dataset is registered, else None."""
    if len(cfg.DATASETS.TEST):
        name = cfg.DATASETS.TEST[0]
        if name in DatasetCatalog.list() or name in MetadataCatalog.list():
            return MetadataCatalog.get(name)
    return None


def class_names_of(cfg, num_classes: int) -> List[str]:
    """The class names of ``cfg.DATASETS.TEST[0]``'s metadata when that dataset is
    registered, else (and for any class past the list) the class ids as strings."""
    metadata = config_metadata(cfg)
    names = list(metadata.get("thing_classes", None) or []) if metadata is not None else []
    return names + [str(i) for i in range(len(names), num_classes)]


def export_metadata(cfg, meta_architecture: str, num_classes: int, outputs: Tuple[str, ...], input_dtype: str,
                    static_size: Optional[Tuple[int, int]], max_detections: Optional[int],
                    mask_resolution: Optional[str] = None, mask_stride: Optional[int] = None,
                    size_divisibility: Optional[int] = None, classes: Optional[dict] = None) -> Dict[str, str]:
    """The ``metadata_props`` of an export of ``cfg``'s model (``mask_*`` for CondInst;
    ``classes``: the weights' class entry, whose names then go in instead of the config's
    dataset's)."""
    values = {
        MARKER: EXPORT_VERSION,
        "meta_architecture": meta_architecture,
        "class_names": padded_names(classes, num_classes) if classes else class_names_of(cfg, num_classes),
        "input_format": cfg.INPUT.FORMAT,
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "input_dtype": input_dtype,
        "static_size": list(static_size) if static_size else None,
        "max_detections": max_detections,
        "outputs": list(outputs),
        "config": cfg.dump(),
    }
    if mask_resolution is not None:
        values.update(mask_resolution=mask_resolution, mask_stride=mask_stride, size_divisibility=size_divisibility)
    if classes:
        values[WEIGHTS_CLASSES] = classes
    return {k: json.dumps(v) if k in _JSON_KEYS else str(v) for k, v in values.items()}


def parse_metadata(props: Dict[str, str]) -> Dict:
    """``metadata_props`` as written by :func:`export_metadata` -> Python values (JSON
    keys decoded; unknown keys kept as strings)."""
    return {k: json.loads(v) if k in _JSON_KEYS else v for k, v in props.items()}
