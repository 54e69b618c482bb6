"""Consistency checks between the config, the datasets and the weights, before anything trains.

A dataset with more categories than the model's classifier fails at the first
iteration with an ``IndexError`` deep in the loss; weights of another class count
evaluate random heads. These checks say which number is which, and which key to set.
"""
from typing import Iterable, Optional

from detectron2.data import MetadataCatalog

from condseg.modeling.model_keys import num_classes, num_classes_key

__all__ = ["ClassCountError", "check_class_counts", "classes_in_state_dict"]


class ClassCountError(ValueError):
    """The datasets' or the weights' categories do not fit the config's class count."""


def check_class_counts(cfg, dataset_names: Iterable[str]) -> None:
    """Raise :class:`ClassCountError` when a dataset (whose dicts were loaded, so that its
    metadata has ``thing_classes``) has more categories than the model has classes."""
    key, num = num_classes_key(cfg), num_classes(cfg)
    for name in dataset_names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) > num:
            raise ClassCountError(
                f"dataset {name!r} has {len(classes)} categories ({', '.join(map(str, classes[:8]))}"
                f"{', ...' if len(classes) > 8 else ''}) but {key} is {num}: set {key} {len(classes)}"
            )


def classes_in_state_dict(state_dict, cfg) -> Optional[int]:
    """The number of foreground classes the classifier of a state dict was trained for,
    or None when it has none of the known classifier keys."""
    for key, offset in (("proposal_generator.head.cls_logits.weight", 0), ("roi_heads.box_predictor.cls_score.weight", 1)):
        if key in state_dict:
            return int(state_dict[key].shape[0]) - offset
    return None
