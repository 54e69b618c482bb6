"""The classes a checkpoint was trained on: written by training into every checkpoint,
read by the Predictor (hence the demo) and by the ONNX export.

Training stores, under the checkpoint key :data:`KEY`, the class metadata of its
``DATASETS.TRAIN`` datasets, with detectron2's metadata key names::

    {"thing_classes": [str, ...],                      # index = the model's class index
     "thing_dataset_id_to_contiguous_id": {int: int},  # only when the metadata has it (COCO json)
     "datasets": [str, ...]}                           # the DATASETS.TRAIN names

so that a model run with a config whose dataset is another one (the quickstart config's
8 shapes for a model trained on a 4-class json) still draws and writes its own names and
category ids. Checkpoints without the entry (older ones, converted ones) read as None, and
their readers keep the config's dataset names.

The entry lives here, with the checkpoint code, because this floor is below
:mod:`condseg.engine`, :mod:`condseg.export` and :mod:`condseg.inference`, which all use it.
"""
import logging
from typing import Iterable, List, Mapping, Optional

from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata

__all__ = ["KEY", "as_metadata", "difference", "from_datasets", "log_difference", "padded_names", "read_entry"]

KEY = "classes"
NAMES = "thing_classes"
ID_MAP = "thing_dataset_id_to_contiguous_id"

logger = logging.getLogger("condseg")


def from_datasets(dataset_names: Iterable[str]) -> Optional[dict]:
    """The entry of the registered datasets ``dataset_names`` (training's), from the first
    one whose metadata has ``thing_classes`` (detectron2 refuses to train on datasets whose
    ``thing_classes`` differ) and the first one with a category id map; None when none has
    class names."""
    dataset_names = list(dataset_names)
    metadata = [MetadataCatalog.get(name) for name in dataset_names]
    names = next((m.get(NAMES) for m in metadata if m.get(NAMES, None)), None)
    if not names:
        return None
    entry = {NAMES: [str(n) for n in names], "datasets": dataset_names}
    id_map = next((m.get(ID_MAP) for m in metadata if m.get(ID_MAP, None)), None)
    if id_map:
        entry[ID_MAP] = {int(k): int(v) for k, v in id_map.items()}
    return entry


def read_entry(checkpoint: Optional[Mapping], source: str) -> Optional[dict]:
    """The class entry of a loaded checkpoint (or of anything holding it under :data:`KEY`,
    e.g. the extra data ``DetectionCheckpointer.load`` returns), checked and with int ids
    (JSON, as in an ONNX file's metadata, has string keys); None when there is none. An
    entry that is not one is logged, naming ``source``, and read as None."""
    entry = checkpoint.get(KEY) if isinstance(checkpoint, Mapping) else None
    if entry is None:
        return None
    try:
        names = entry[NAMES]
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{NAMES} is not a list of names")
        out = {NAMES: list(names), "datasets": [str(d) for d in entry.get("datasets", [])]}
        if entry.get(ID_MAP):
            out[ID_MAP] = {int(k): int(v) for k, v in entry[ID_MAP].items()}
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        logger.warning("%s: its %r entry is not a class list (%s): using the config's dataset names", source, KEY, e)
        return None
    return out


def as_metadata(entry: dict) -> Metadata:
    """The entry as a detectron2 ``Metadata`` (not in ``MetadataCatalog``), named after
    its first training dataset."""
    values = {NAMES: list(entry[NAMES])}
    if entry.get(ID_MAP):
        values[ID_MAP] = dict(entry[ID_MAP])
    return Metadata(name=(entry.get("datasets") or ["the weights' classes"])[0], **values)


def padded_names(entry: dict, num_classes: int) -> List[str]:
    """The entry's names, with the class indices as strings for the model's classes past them."""
    names = list(entry[NAMES])
    return names + [str(i) for i in range(len(names), num_classes)]


def _listing(names, limit: int = 8) -> str:
    names = list(map(str, names))
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _ids(names, id_map) -> List[int]:
    """Dataset category id per class index (the index itself without a map), to compare
    two class lists (:func:`condseg.inference.results.category_ids`, which also numbers
    classes past the map, is on a floor this one may not import)."""
    reverse = {v: k for k, v in (id_map or {}).items()}
    return [int(reverse.get(i, i)) for i in range(len(names))]


def difference(entry: dict, config_metadata: Optional[Metadata], consequence: str) -> Optional[str]:
    """One line saying how the weights' classes differ from those of the config's dataset
    (``config_metadata``; None when the config names none), ending in ``consequence``
    (e.g. ``"drawing the weights' names"``); None when names and category ids agree."""
    names = list(entry[NAMES])
    theirs = list(config_metadata.get(NAMES, None) or []) if config_metadata is not None else []
    ids = _ids(names, entry.get(ID_MAP))
    their_ids = _ids(theirs, config_metadata.get(ID_MAP, None) if config_metadata is not None else None)
    if names == theirs and ids == their_ids:
        return None
    head = f"the weights were trained on {len(names)} classes ({_listing(names)})"
    if config_metadata is None:
        tail = "the config names no test dataset"
    else:
        dataset = f"the config's dataset {config_metadata.name}"
        if not theirs:
            tail = f"{dataset} has no class names"
        elif len(theirs) != len(names):
            tail = f"{dataset} has {len(theirs)} ({_listing(theirs)})"
        elif names != theirs:
            tail = f"{dataset} has {len(theirs)} other ones ({_listing(theirs)})"
        else:
            tail = f"{dataset} has the same names with other category ids ({_listing(their_ids)} for {_listing(ids)})"
    return f"{head}; {tail}: {consequence}"


def log_difference(entry: dict, config_metadata: Optional[Metadata], source: str, consequence: str) -> None:
    """:func:`difference` as a warning on the ``condseg`` logger, naming ``source`` (the weights)."""
    line = difference(entry, config_metadata, consequence)
    if line:
        logger.warning("%s: %s", source, line)
