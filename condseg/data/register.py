"""Register the datasets a config names: the built-in shapes and ``DATASETS.COCO`` entries."""
import os

from .coco import register_coco_instances
from .shapes import register_shapes_datasets

__all__ = ["register_datasets_from_cfg"]


def register_datasets_from_cfg(cfg) -> None:
    """Register (or re-register) every dataset described by ``cfg.DATASETS``.

    * ``condseg_shapes_train`` / ``condseg_shapes_val`` with the sizes of ``DATASETS.SHAPES``;
    * each ``[name, json_file, image_root]`` of ``DATASETS.COCO``.
    """
    s = cfg.DATASETS.SHAPES
    register_shapes_datasets(
        num_train=s.NUM_TRAIN, num_val=s.NUM_VAL, min_size=s.MIN_SIZE, max_size=s.MAX_SIZE, seed=s.SEED
    )
    for k, entry in enumerate(cfg.DATASETS.COCO):
        if not isinstance(entry, (list, tuple)) or len(entry) != 3 or not all(isinstance(x, str) for x in entry):
            raise ValueError(
                f"DATASETS.COCO[{k}] must be [name, json_file, image_root] (three strings), got {entry!r}"
            )
        name, json_file, image_root = entry
        register_coco_instances(name, os.path.expanduser(json_file), os.path.expanduser(image_root))
