"""json exports: RLE round trip, category ids, COCO files pycocotools reads."""
import json

import numpy as np
import torch
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO

from condseg.inference.results import (
    category_ids,
    coco_results_file,
    decode_segmentation,
    encode_mask,
    instances_to_records,
    video_results_file,
)


def _instances():
    inst = Instances((20, 30))
    inst.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 11.0, 12.0], [0.0, 0.0, 30.0, 20.0]]))
    inst.scores = torch.tensor([0.9, 0.25])
    inst.pred_classes = torch.tensor([1, 0])
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    masks[0, 2:12, 1:11] = True
    masks[1, 5:7, :] = True
    inst.pred_masks = masks
    return inst


def test_rle_round_trip():
    m = np.random.default_rng(0).random((17, 23)) > 0.5
    seg = encode_mask(m)
    assert isinstance(seg["counts"], str) and seg["size"] == [17, 23]
    assert np.array_equal(decode_segmentation(seg), m)


def test_records():
    inst = _instances()
    recs = instances_to_records(inst, ["a", "b"], [3, 7])
    assert [r["category_id"] for r in recs] == [7, 3] and [r["category_name"] for r in recs] == ["b", "a"]
    assert recs[0]["bbox"] == [1.0, 2.0, 10.0, 10.0] and recs[0]["area"] == 100
    assert np.array_equal(decode_segmentation(recs[1]["segmentation"]), inst.pred_masks[1].numpy())
    json.dumps(recs)
    assert instances_to_records(inst[:0], ["a", "b"]) == []


def test_category_ids_follow_the_dataset_mapping():
    class Meta:
        thing_dataset_id_to_contiguous_id = {1: 0, 5: 1}

    assert category_ids(Meta(), 2) == [1, 5]
    assert category_ids(object(), 3) == [0, 1, 2]
    assert category_ids(Meta(), 4) == [1, 5, 6, 7]  # a model with more classes: no id taken twice


def test_coco_file_loads_with_pycocotools_and_load_res(tmp_path):
    inst = _instances()
    images = [{"id": 4, "file_name": "x.png", "height": 20, "width": 30}]
    data = coco_results_file(images, [instances_to_records(inst, ["a", "b"], [3, 7])], ["a", "b"], [3, 7])
    path = tmp_path / "res.json"
    path.write_text(json.dumps(data))
    coco = COCO(str(path))
    assert coco.getImgIds() == [4] and sorted(coco.getCatIds()) == [3, 7]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[4]))
    assert [a["score"] for a in anns] == [0.9, 0.25]
    res = coco.loadRes(data["annotations"])  # the results list, against itself as ground truth
    assert len(res.getAnnIds()) == 2


def test_video_file():
    data = video_results_file("v.mp4", 15, 30, 20, [{"frame": 0, "time": 0.0, "instances": []}], ["a"],
                              errors=[{"frame": 3, "message": "m"}], complete=False)
    assert data["num_frames"] == 1 and data["errors"][0]["frame"] == 3 and data["complete"] is False
