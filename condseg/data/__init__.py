"""Datasets and mapping. Importing registers the built-in shapes datasets with default sizes."""
from .coco import load_coco_instances, register_coco_instances
from .mapper import CondsegDatasetMapper, UnreadableImage
from .register import register_datasets_from_cfg
from .shapes import SHAPES_CLASSES, generate_shapes_dataset, register_shapes_datasets

register_shapes_datasets()

__all__ = [
    "CondsegDatasetMapper",
    "SHAPES_CLASSES",
    "UnreadableImage",
    "generate_shapes_dataset",
    "load_coco_instances",
    "register_coco_instances",
    "register_datasets_from_cfg",
    "register_shapes_datasets",
]
