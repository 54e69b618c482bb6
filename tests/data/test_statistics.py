"""condseg.data.statistics: the numbers of a dataset equal those counted by hand (crowd,
empty images, non-contiguous ids, box-only annotations, COCO's size boundaries), and the
figure is drawn."""
import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.structures import BoxMode

import builders.quirky_coco as qc
from condseg.data.coco import load_coco_instances
from condseg.data.statistics import dataset_statistics, draw_statistics, format_statistics, instance_area, size_class

QUIRKY_CLASSES = ["circle", "square", "triangle", "hexagon"]  # contiguous order: ids 3, 7, 42, 99


@pytest.fixture(scope="module")
def counted(quirky):
    """The quirky json as loaded, its truth masks, and condseg's dataset dicts."""
    return quirky["raw"], qc.load_truth_masks(quirky["dir"]), load_coco_instances(quirky["json"], quirky["root"])


def test_quirky_coco_counts_equal_a_count_of_the_raw_json(counted):
    raw, truth, dicts = counted
    stats = dataset_statistics(dicts, QUIRKY_CLASSES)
    kept = [a for a in raw["annotations"] if a["id"] not in qc.DROPPED_ANN_IDS]
    instances = [a for a in kept if not a["iscrowd"]]
    name_of = {c["id"]: c["name"] for c in raw["categories"]}
    per_image = [sum(a["image_id"] == im["id"] for a in instances) for im in sorted(raw["images"], key=lambda i: i["id"])]

    assert stats["images"] == len(raw["images"]) == 6
    assert stats["images_without_annotations"] == 1  # image 4 (EMPTY_IMAGE_ID)
    assert stats["images_with_only_crowd"] == 0
    assert stats["crowd_instances"] == 1  # annotation 202, not an instance
    assert stats["instances"] == len(instances)
    assert stats["classes"] == QUIRKY_CLASSES
    assert stats["instances_per_class"] == {n: sum(name_of[a["category_id"]] == n for a in instances)
                                            for n in QUIRKY_CLASSES}
    assert stats["instances_per_class"]["hexagon"] == 0  # category 99, never annotated, still a class
    areas = [truth[a["id"]].sum() for a in instances]  # the drawn pixels, not the loader's masks
    assert stats["sizes"] == {"small": sum(a < 32 ** 2 for a in areas),
                              "medium": sum(32 ** 2 <= a < 96 ** 2 for a in areas),
                              "large": sum(a >= 96 ** 2 for a in areas)}
    assert stats["area_from"] == {"mask": len(instances), "area": 0, "box": 0}
    hist = np.bincount(per_image).tolist()
    assert stats["instances_per_image"] == {"min": min(per_image), "median": float(np.median(per_image)),
                                            "mean": pytest.approx(np.mean(per_image)), "max": max(per_image),
                                            "histogram": hist}
    assert hist[0] == 1 and json.loads(json.dumps(stats)) == stats  # json-serialisable as it is


def _square(x, y, side):
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


def _full_rle(h, w):
    rle = mask_util.encode(np.asfortranarray(np.ones((h, w), np.uint8)))
    return {"size": [h, w], "counts": rle["counts"].decode()}


def hand_made_dicts():
    """Four 100x100 images; areas chosen on both sides of COCO's boundaries."""
    xywh = BoxMode.XYWH_ABS
    bitmask = np.zeros((100, 100), np.uint8)
    bitmask[:40, :40] = 1  # 1600 px
    return [
        {"file_name": "a.png", "height": 100, "width": 100, "annotations": [
            {"category_id": 0, "bbox": [10, 10, 10, 10], "bbox_mode": xywh, "segmentation": _square(10, 10, 10)},
            {"category_id": 2, "bbox": [0, 0, 32, 32], "bbox_mode": xywh},  # box only: 32 * 32, medium
            {"category_id": 0, "bbox": [0, 0, 90, 90], "bbox_mode": xywh, "iscrowd": 1,
             "segmentation": _square(0, 0, 90)},
        ]},
        {"file_name": "b.png", "height": 100, "width": 100, "annotations": []},
        {"file_name": "c.png", "height": 100, "width": 100, "annotations": [
            {"category_id": 1, "bbox": [0, 0, 5, 5], "bbox_mode": xywh, "iscrowd": 1, "segmentation": _square(0, 0, 5)},
        ]},
        {"file_name": "d.png", "height": 100, "width": 100, "annotations": [
            {"category_id": 1, "bbox": [0, 0, 100, 100], "bbox_mode": xywh, "segmentation": _full_rle(100, 100)},
            {"category_id": 2, "bbox": [0, 0, 40, 40], "bbox_mode": xywh, "segmentation": bitmask},
            {"category_id": 0, "bbox": [0, 0, 10, 10], "bbox_mode": xywh, "area": 5000.0},  # a loader kept 'area'
            {"category_id": 5, "bbox": [0.0, 0.0, 31.0, 33.0], "bbox_mode": BoxMode.XYXY_ABS},  # 31 * 33 < 1024
        ]},
    ]


def test_hand_made_dataset_counts():
    stats = dataset_statistics(hand_made_dicts(), ["a", "b", "c"])
    assert stats["images"] == 4
    assert stats["images_without_annotations"] == 1 and stats["images_with_only_crowd"] == 1
    assert stats["instances"] == 6 and stats["crowd_instances"] == 2 and stats["box_only_instances"] == 3
    # class 5 has no name: named by its number, and the classes between are listed with 0
    assert stats["classes"] == ["a", "b", "c", "3", "4", "5"]
    assert stats["instances_per_class"] == {"a": 2, "b": 1, "c": 2, "3": 0, "4": 0, "5": 1}
    # 100 (small), 1024 (medium: COCO's small is area < 32**2), 10000 (large), 1600, 5000 (medium), 1023 (small)
    assert stats["sizes"] == {"small": 2, "medium": 3, "large": 1}
    assert stats["area_from"] == {"mask": 3, "area": 1, "box": 2}
    assert stats["instances_per_image"] == {"min": 0, "median": 1.0, "mean": 1.5, "max": 4, "histogram": [2, 0, 1, 0, 1]}


def test_areas_and_size_classes_at_the_boundaries():
    assert [size_class(a) for a in (0, 1023.9, 1024, 9215.9, 9216, 1e6)] == \
        ["small", "small", "medium", "medium", "large", "large"]
    assert instance_area({"segmentation": _square(10, 10, 10), "bbox": [10, 10, 10, 10]}, 100, 100) == (100.0, "mask")
    uncompressed = {"size": [4, 5], "counts": [3, 6, 11]}  # 6 foreground pixels
    assert instance_area({"segmentation": uncompressed, "bbox": [0, 0, 2, 4]}, 4, 5) == (6.0, "mask")
    assert instance_area({"bbox": [1, 2, 3, 4], "bbox_mode": BoxMode.XYWH_ABS}, 10, 10) == (12.0, "box")


def test_empty_dataset_and_the_text_and_figure(tmp_path):
    empty = dataset_statistics([])
    assert empty["images"] == 0 and empty["instances"] == 0 and empty["instances_per_image"]["histogram"] == []
    stats = dataset_statistics(hand_made_dicts(), ["a", "b", "c"])
    text = format_statistics(stats, "hand")
    assert text.startswith("hand: 4 images, 6 instances (2 crowd annotations apart, 3 without a mask)")
    assert "images without annotations: 1 (only crowd: 1)" in text
    assert any(line.split()[:3] == ["c", "2", "33.3%"] for line in text.splitlines())
    assert any(line.split()[:3] == ["medium", "3", "50.0%"] for line in text.splitlines())
    path = str(tmp_path / "statistics.png")
    draw_statistics(stats, path, title="hand")
    image = cv2.imread(path)
    assert image is not None and image.shape[1] > 2 * image.shape[0]
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10
    # the bars: matplotlib's tab:blue (classes), tab:orange/green/red (sizes), tab:purple (per image)
    for rgb in ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)):
        assert (np.abs(image[:, :, ::-1].astype(int) - rgb).max(axis=2) < 8).sum() > 100, rgb
