"""The gallery: which images, and what is drawn."""
import cv2
import numpy as np
from pycocotools.coco import COCO

from condseg.report.gallery import CONFUSED, FOUND, WRONG, draw_comparison, worst_images, write_gallery
from condseg.report.inputs import image_finder
from condseg.report.matching import match_dataset


def test_worst_images_rank_by_errors(synthetic):
    coco = COCO(synthetic["json"])
    matches = match_dataset(coco, synthetic["results"], "segm", 0.5, 0.3)
    worst = worst_images(matches, 3)
    for kind, key in (("missed", "num_missed"), ("false_positives", "num_false_positives")):
        counts = [getattr(m, key) for m in worst[kind]]
        assert len(counts) == 3 and counts == sorted(counts, reverse=True) and counts[0] > 0
        assert counts[0] == max(getattr(m, key) for m in matches)
    assert worst_images(matches, 0) == {"missed": [], "false_positives": []}


def test_comparison_puts_ground_truth_next_to_detections():
    image = np.full((100, 150, 3), 90, np.uint8)
    masks = np.zeros((2, 100, 150), bool)
    masks[0, 10:40, 10:50] = True
    masks[1, 50:90, 80:140] = True
    gt = {"masks": masks, "labels": ["a", "b"], "colors": [FOUND, WRONG]}
    dt = {"masks": masks[:1], "labels": ["a 90%"], "colors": [CONFUSED]}
    out = draw_comparison(image, gt, dt)
    half = (out.shape[1] - 4) // 2
    assert out.shape[0] > 384 * 100 / 150 and half == round(150 * 384 / 150)  # small images are enlarged
    left, right = out[:, :half].astype(int), out[:, -half:].astype(int)

    def pixels_near(img, color):  # the colour blended half and half into the grey, as masks are drawn
        return int(np.count_nonzero(np.all(np.abs(img - (0.5 * np.array(color) + 45)) < 20, axis=-1)))

    assert pixels_near(left, WRONG) > 1000 and pixels_near(right, WRONG) == 0  # the missed one: left only
    assert pixels_near(right, CONFUSED) > 100 and pixels_near(left, CONFUSED) == 0


def test_write_gallery_writes_the_picked_images(synthetic, tmp_path):
    coco = COCO(synthetic["json"])
    matches = match_dataset(coco, synthetic["results"], "bbox", 0.5, 0.3)
    names = [coco.cats[c]["name"] for c in sorted(coco.getCatIds())]
    shown = write_gallery(matches, coco, synthetic["results"], "bbox", names,
                          image_finder(coco, synthetic["image_root"]), str(tmp_path / "gallery"), "bbox", 2, "0.3")
    files = [e["file"] for entries in shown.values() for e in entries]
    assert len(files) == 4 and all(f.startswith("gallery/bbox_") for f in files)
    for f in files:
        image = cv2.imread(str(tmp_path / f))
        assert image is not None and image.shape[0] > 300 and image.std() > 10
