"""The whole report: its files are real pictures and tables, its page links them, and every
evaluation (``Trainer.test``) writes one."""
import csv
import logging
import os
import re

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from condseg.report import write_report
from condseg.report.inputs import image_finder

ITEMS = ("per_category.csv", "pr_curves.png", "confusion.png", "confusion.csv", "errors.png", "errors.csv",
         "scores.png", "thresholds.csv")


def check_png(path: str, min_size=(200, 200)) -> None:
    """A decodable PNG of at least ``min_size`` (h, w) that is not one colour."""
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    assert image is not None, path
    assert image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1], (path, image.shape)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20, f"{path} is (nearly) one colour"


def check_report(index: str, iou_types, num_classes: int) -> str:
    folder = os.path.dirname(index)
    page = open(index).read()
    for t in iou_types:
        for item in ITEMS:
            path = os.path.join(folder, f"{t}_{item}")
            assert os.path.getsize(path) > 0, path
            if item.endswith(".png"):
                check_png(path)
        with open(os.path.join(folder, f"{t}_per_category.csv")) as f:
            assert len(list(csv.reader(f))) == num_classes + 2  # header, classes, all
        assert f'id="{t}"' in page
    links = re.findall(r'(?:href|src)="([^"#]+)"', page)
    assert links and not any(link.startswith(("/", "http")) for link in links)  # relative: opens from disk
    for link in links:
        assert os.path.isfile(os.path.join(folder, link)), link
    gallery = [link for link in links if link.startswith("gallery/")]
    for link in gallery:
        check_png(os.path.join(folder, link))
    return page


def test_report_files_are_real_and_linked(synthetic, tmp_path):
    coco = COCO(synthetic["json"])
    out = str(tmp_path / "report")
    index = write_report(coco, synthetic["results"], out, image_path=image_finder(coco, synthetic["image_root"]),
                         gallery_images=2)
    assert index == os.path.join(out, "index.html")
    page = check_report(index, ("bbox", "segm"), len(coco.getCatIds()))
    assert len(re.findall(r'src="gallery/', page)) == 2 * 2 * 2  # 2 iou types x 2 galleries x 2 images
    assert "--confidence-threshold" in page and "Sim" in page and "supercategory" in page
    # by default the confusion matrix counts the detections the best-F1 threshold keeps (as the table shows it)
    with open(os.path.join(out, "segm_thresholds.csv")) as f:
        shown = float(next(r for r in csv.DictReader(f) if r["category"] == "all categories")["threshold"])
    kept = sum(1 for r in synthetic["results"] if r["score"] >= np.floor(shown * 1000 + 1e-9) / 1000)
    with open(os.path.join(out, "segm_confusion.csv")) as f:
        counts = np.array([[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]])
    assert counts[:, :-1].sum() == kept < len(synthetic["results"])
    # a second report replaces the first, leaving nothing of it behind
    index = write_report(coco, synthetic["results"], out, image_path=image_finder(coco, synthetic["image_root"]),
                         iou_types=["bbox"], gallery_images=1)
    assert not any(name.startswith("segm") for name in os.listdir(out))
    assert len(os.listdir(os.path.join(out, "gallery"))) == 2
    check_report(index, ("bbox",), len(coco.getCatIds()))


def test_report_refuses_to_replace_a_folder_that_is_not_a_report(synthetic, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a report folder"):
        write_report(COCO(synthetic["json"]), synthetic["results"], str(keep), iou_types=["bbox"])
    assert (keep / "notes.txt").exists() and not any(p.name.startswith("mine.tmp") for p in tmp_path.iterdir())


@pytest.mark.slow
def test_every_evaluation_writes_a_report(tiny_model, tmp_path, monkeypatch):
    from detectron2.checkpoint import DetectionCheckpointer

    from condseg.config_setup import setup_cfg
    from condseg.engine import Trainer

    from condseg.data.shapes import generate_shapes_dataset

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    generate_shapes_dataset("val", 3, 96, 128, seed=1, num_workers=1)  # what the options below register, in-process
    config, weights = tiny_model
    opts = ["DATASETS.SHAPES.NUM_VAL", "3", "DATASETS.SHAPES.MIN_SIZE", "96", "DATASETS.SHAPES.MAX_SIZE", "128",
            "DATALOADER.NUM_WORKERS", "0", "TEST.REPORT.SCORE_THRESHOLD", "0.0", "TEST.REPORT.GALLERY_IMAGES", "1",
            "OUTPUT_DIR", str(tmp_path / "out")]
    cfg = setup_cfg(config, opts)
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("condseg.engine.trainer")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        results = Trainer.test(cfg, model)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert "segm" in results and "bbox" in results
    index = tmp_path / "out" / "inference" / "condseg_shapes_val" / "report" / "index.html"
    assert f"Evaluation report of condseg_shapes_val: {index}" in lines
    check_report(str(index), ("bbox", "segm"), 8)
    assert "coco_instances_results.json" in index.read_text()

    index.parent.rename(tmp_path / "first_report")
    Trainer.test(setup_cfg(config, [*opts, "TEST.REPORT.ENABLED", "False"]), model)
    assert not index.parent.exists()
