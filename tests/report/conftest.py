"""Shared inputs of the report tests: a small generated shapes split whose classes are put
into two supercategories, and its synthetic detections (synthetic_detections.py)."""
import json
import os

import pytest
from pycocotools.coco import COCO
from synthetic_detections import synthetic_results

from condseg.data.shapes import generate_shapes_dataset
from condseg.data.shapes.classes import SHAPES_CLASSES

ROUND = {"ellipse", "crescent", "ring", "heart"}  # the other four are "angular"
NUM_IMAGES = 10


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """``{"json": gt json, "image_root", "coco": COCO, "results": list, "results_json": path}``:
    a 10-image shapes split (96-128 px) with supercategories "round" / "angular"."""
    root = tmp_path_factory.mktemp("report_data")
    json_file = generate_shapes_dataset("val", NUM_IMAGES, 96, 128, seed=1, root=str(root), num_workers=1)
    with open(json_file) as f:
        data = json.load(f)
    for c in data["categories"]:
        assert c["name"] in SHAPES_CLASSES
        c["supercategory"] = "round" if c["name"] in ROUND else "angular"
    gt_json = str(root / "gt.json")
    with open(gt_json, "w") as f:
        json.dump(data, f)
    coco = COCO(gt_json)
    results = synthetic_results(coco)
    results_json = str(root / "coco_instances_results.json")
    with open(results_json, "w") as f:
        json.dump(results, f)
    return {"json": gt_json, "image_root": os.path.join(os.path.dirname(json_file), "images"), "coco": coco,
            "results": results, "results_json": results_json}


@pytest.fixture(scope="session")
def synthetic_eval(synthetic):
    """``synthetic_eval(iou_type)``: the report's ``COCOeval`` of the synthetic detections
    (computed once per iou type)."""
    from condseg.report.cocoeval import evaluate

    cache = {}

    def get(iou_type: str):
        if iou_type not in cache:
            cache[iou_type] = evaluate(COCO(synthetic["json"]), synthetic["results"], iou_type)
        return cache[iou_type]

    return get
