"""A run's config: file and overrides merged, the CPU when CUDA is missing, a given
CfgNode left as it was, the datasets it names registered."""
import os

import pytest
import torch
from detectron2.data import MetadataCatalog

from condseg.config import get_condseg_cfg
from condseg.config_setup import build_cfg, setup_cfg

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "configs", "quickstart", "condinst_R18_shapes.yaml")


def test_file_and_overrides(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = build_cfg(QUICKSTART, ["MODEL.FCOS.NMS_TH", 0.5, "MODEL.DEVICE", "cuda"])
    assert cfg.is_frozen() and cfg.MODEL.FCOS.NMS_TH == 0.5 and cfg.MODEL.DEVICE == "cpu"
    assert not build_cfg(QUICKSTART, freeze=False).is_frozen()
    with pytest.raises(AssertionError, match="Non-existent key"):  # yacs
        build_cfg(QUICKSTART, ["MODEL.NO_SUCH_KEY", 1])


def test_a_given_config_is_copied_not_changed():
    base = get_condseg_cfg()
    base.freeze()
    cfg = build_cfg(base, ["MODEL.FCOS.NMS_TH", 0.1])
    assert cfg.MODEL.FCOS.NMS_TH == 0.1 and base.MODEL.FCOS.NMS_TH != 0.1 and base.is_frozen()


def test_setup_registers_the_datasets_it_names(tmp_path):
    name = "config_setup_test_coco"
    (tmp_path / "a.json").write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}')
    (tmp_path / "images").mkdir()
    cfg = setup_cfg(None, ["DATASETS.COCO", [[name, str(tmp_path / "a.json"), str(tmp_path / "images")]]])
    assert MetadataCatalog.get(name).json_file == str(tmp_path / "a.json")
    assert cfg.DATASETS.COCO[0][0] == name
