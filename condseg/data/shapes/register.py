"""``condseg_shapes_train`` / ``condseg_shapes_val`` in detectron2's catalogs, generated
at first load."""
from __future__ import annotations

import os
from typing import List, Optional

from .classes import SHAPES_CLASSES, SHAPES_COLORS
from .write import generate_shapes_dataset, shapes_dataset_dir

__all__ = ["register_shapes_datasets"]


def _register_split(name: str, split: str, num_images: int, min_size: int, max_size: int,
                    seed: int, root: Optional[str]) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json

    final_dir = shapes_dataset_dir(split, num_images, min_size, max_size, seed, root)
    image_root = os.path.join(final_dir, "images")

    def load() -> List[dict]:
        json_file = generate_shapes_dataset(split, num_images, min_size, max_size, seed, root)
        return load_coco_json(json_file, image_root, name)

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        thing_classes=list(SHAPES_CLASSES),
        thing_colors=[tuple(c) for c in SHAPES_COLORS],
        json_file=os.path.join(final_dir, "annotations.json"),
        image_root=image_root,
        evaluator_type="coco",
        generated_on_demand=True,  # the files appear at first load (input checks skip them)
    )


def register_shapes_datasets(num_train: int = 3000, num_val: int = 200, min_size: int = 256,
                             max_size: int = 384, seed: int = 0, root: Optional[str] = None) -> None:
    """Register ``condseg_shapes_train`` (seed) and ``condseg_shapes_val`` (seed + 1).

    Lazy: nothing is generated until ``DatasetCatalog.get(name)`` is first called, so
    the metadata's ``json_file`` exists only from then on. Registering again (other
    sizes) replaces the previous registration.
    """
    _register_split("condseg_shapes_train", "train", num_train, min_size, max_size, seed, root)
    _register_split("condseg_shapes_val", "val", num_val, min_size, max_size, seed + 1, root)
