"""condseg.checkpoint.classes: the class entry training writes into every checkpoint, and
the line that says how it differs from a config's dataset."""
import json
import os

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata

from condseg.checkpoint import classes
from condseg.data import SHAPES_CLASSES
from builders.classes import DATASET, QUIRKY_CLASSES, QUIRKY_ID_MAP

ENTRY = {"thing_classes": ["a", "b", "c", "d"], "thing_dataset_id_to_contiguous_id": {3: 0, 7: 1, 42: 2, 99: 3},
         "datasets": ["mine_train"]}


def test_every_checkpoint_of_a_training_holds_its_datasets_classes(coco_training):
    names = sorted(f for f in os.listdir(coco_training.output_dir) if f.endswith(".pth"))
    # resumable (save_resumable), periodic (CHECKPOINT_PERIOD) and final
    assert names == ["model_0000000.pth", "model_0000001.pth", "model_final.pth"]
    for name in names:
        checkpoint = torch.load(os.path.join(coco_training.output_dir, name), weights_only=False)
        stored = checkpoint[classes.KEY]
        assert stored["thing_classes"] == QUIRKY_CLASSES == ["circle", "square", "triangle", "hexagon"]
        assert stored["thing_dataset_id_to_contiguous_id"] == QUIRKY_ID_MAP == {3: 0, 7: 1, 42: 2, 99: 3}
        assert stored["datasets"] == [DATASET]
        assert classes.read_entry(checkpoint, name) == stored


def test_entry_of_a_dataset_without_category_ids():
    entry = classes.from_datasets(["condseg_shapes_train"])
    assert entry == {"thing_classes": list(SHAPES_CLASSES), "datasets": ["condseg_shapes_train"]}
    assert classes.from_datasets(["classes_test_not_registered"]) is None


def test_read_entry_takes_json_and_refuses_what_is_not_a_class_list(condseg_log):
    assert classes.read_entry({"model": {}}, "old.pth") is None  # old and converted checkpoints
    assert classes.read_entry({classes.KEY: json.loads(json.dumps(ENTRY))}, "x.onnx") == ENTRY  # str ids -> int
    assert classes.read_entry({classes.KEY: {"thing_classes": "abcd"}}, "odd.pth") is None
    assert "odd.pth: its 'classes' entry is not a class list" in condseg_log.text


def test_as_metadata_and_padded_names():
    meta = classes.as_metadata(ENTRY)
    assert meta.name == "mine_train" and meta.thing_classes == ENTRY["thing_classes"]
    assert meta.thing_dataset_id_to_contiguous_id == ENTRY["thing_dataset_id_to_contiguous_id"]
    assert classes.padded_names(ENTRY, 6) == ["a", "b", "c", "d", "4", "5"]


@pytest.mark.parametrize("config_meta, expected", [
    (MetadataCatalog.get("condseg_shapes_val"),
     "the weights were trained on 4 classes (a, b, c, d); the config's dataset condseg_shapes_val has 8 "
     f"({', '.join(SHAPES_CLASSES)}): drawing"),
    (Metadata(name="other", thing_classes=["w", "x", "y", "z"]),
     "the weights were trained on 4 classes (a, b, c, d); the config's dataset other has 4 other ones (w, x, y, z): drawing"),
    (Metadata(name="renumbered", thing_classes=["a", "b", "c", "d"]),
     "the config's dataset renumbered has the same names with other category ids (0, 1, 2, 3 for 3, 7, 42, 99)"),
    (Metadata(name="empty"), "the config's dataset empty has no class names"),
    (None, "the config names no test dataset"),
], ids=["counts", "names", "ids", "no-names", "no-dataset"])
def test_difference_says_what_differs(config_meta, expected):
    assert expected in classes.difference(ENTRY, config_meta, "drawing")


def test_no_difference_no_line(condseg_log):
    same = Metadata(name="mine", thing_classes=ENTRY["thing_classes"],
                    thing_dataset_id_to_contiguous_id=ENTRY["thing_dataset_id_to_contiguous_id"])
    assert classes.difference(ENTRY, same, "drawing") is None
    classes.log_difference(ENTRY, same, "w.pth", "drawing")
    assert condseg_log.text == ""
