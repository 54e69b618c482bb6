"""Builders shared by the data tests."""
import json

import pytest

import builders.quirky_coco as qc


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    """The quirky COCO json (``builders/quirky_coco.py``) written once per module:
    ``dir``, ``json``, ``root`` (its image folder) and ``raw`` (the json as loaded)."""
    d = tmp_path_factory.mktemp("quirky")
    json_file, image_root = qc.make_quirky_coco(d)
    with open(json_file) as f:
        raw = json.load(f)
    return {"dir": str(d), "json": json_file, "root": image_root, "raw": raw}
