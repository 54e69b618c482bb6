"""Per-category AP of the report against detectron2's own per-category table."""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from condseg.data.coco import register_coco_instances
from condseg.report.cocoeval import evaluate
from condseg.report.per_category import per_category_ap


def _instances(records, height, width, to_contiguous):
    inst = Instances((height, width))
    boxes = np.asarray([r["bbox"] for r in records], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    inst.pred_boxes = Boxes(torch.from_numpy(boxes))
    inst.scores = torch.tensor([r["score"] for r in records], dtype=torch.float32)
    inst.pred_classes = torch.tensor([to_contiguous[r["category_id"]] for r in records], dtype=torch.int64)
    masks = [mask_util.decode({"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()})
             for r in records]
    inst.pred_masks = torch.from_numpy(np.stack(masks).astype(bool)) if masks else torch.zeros(0, height, width,
                                                                                                  dtype=torch.bool)
    return inst


@pytest.fixture(scope="module")
def detectron2_run(synthetic, tmp_path_factory):
    """detectron2's COCOEvaluator on the synthetic detections: (its results, the results
    json it wrote)."""
    name = "report_test_synthetic"
    register_coco_instances(name, synthetic["json"], synthetic["image_root"])
    to_contiguous = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    out = tmp_path_factory.mktemp("d2_eval")
    evaluator = COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False, output_dir=str(out),
                              use_fast_impl=False)
    evaluator.reset()
    coco = synthetic["coco"]
    for image_id in sorted(coco.getImgIds()):
        records = [r for r in synthetic["results"] if r["image_id"] == image_id]
        info = coco.imgs[image_id]
        evaluator.process([{"image_id": image_id}],
                          [{"instances": _instances(records, info["height"], info["width"], to_contiguous)}])
    results = evaluator.evaluate()
    with open(out / "coco_instances_results.json") as f:
        return results, json.load(f)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_per_category_ap_equals_detectron2s_table(synthetic, detectron2_run, iou_type):
    d2, saved = detectron2_run
    rows = per_category_ap(evaluate(COCO(synthetic["json"]), saved, iou_type))
    names = MetadataCatalog.get("report_test_synthetic").thing_classes
    assert [r["name"] for r in rows[:-1]] == names
    for r in rows[:-1]:
        assert r["AP"] == d2[iou_type][f"AP-{r['name']}"], r["name"]  # the same numbers, not close ones
    all_row = rows[-1]
    for key in ("AP", "AP50", "AP75"):
        assert all_row[key] == pytest.approx(d2[iou_type][key], abs=1e-9)
    aps = [r["AP"] for r in rows[:-1]]
    assert len(set(np.round(aps, 6))) > 3 and 0 < min(aps) and max(aps) < 100  # the data makes them differ


def test_ap50_ap75_equal_a_plain_cocoeval_per_category(synthetic):
    coco = COCO(synthetic["json"])
    rows = per_category_ap(evaluate(coco, synthetic["results"], "segm"))
    gt = COCO(synthetic["json"])
    plain = COCOeval(gt, gt.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in synthetic["results"]]),
                     "segm")
    plain.evaluate()
    plain.accumulate()
    p = plain.eval["precision"]  # (10, 101, K, 4, 3)
    for k, r in enumerate(rows[:-1]):
        for key, t in (("AP50", 0), ("AP75", 5)):
            expected = p[t, :, k, 0, -1]
            assert r[key] == pytest.approx(100 * expected[expected > -1].mean(), abs=1e-12)
        assert r["gt"] == len(coco.getAnnIds(catIds=[r["id"]], iscrowd=False))
        assert r["det"] == sum(1 for d in synthetic["results"] if d["category_id"] == r["id"])
