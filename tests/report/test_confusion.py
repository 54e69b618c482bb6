"""The confusion matrix of the synthetic detections: its counts and their totals."""
import numpy as np
import pytest
from pycocotools.coco import COCO

from condseg.report.confusion import confusion_matrix
from condseg.report.matching import match_dataset
from condseg.report.scores import category_scores


@pytest.mark.parametrize("iou_type,score", [("segm", 0.3), ("bbox", 0.0), ("segm", 0.6)])
def test_counts_add_up_to_ground_truth_and_detections_above_the_score(synthetic, iou_type, score):
    coco = COCO(synthetic["json"])
    cats = sorted(coco.getCatIds())
    k = len(cats)
    matches = match_dataset(coco, synthetic["results"], iou_type, 0.5, score)
    matrix = confusion_matrix(matches, k)
    assert matrix.shape == (k + 1, k + 1) and matrix[k, k] == 0
    gt_per_class = [len(coco.getAnnIds(catIds=[c], iscrowd=False)) for c in cats]
    dt_per_class = [sum(1 for r in synthetic["results"] if r["category_id"] == c and r["score"] >= score) for c in cats]
    assert matrix[:k].sum(axis=1).tolist() == gt_per_class
    assert matrix[:, :k].sum(axis=0).tolist() == dt_per_class
    assert matrix[:k].sum() == len(coco.getAnnIds(iscrowd=False))
    assert matrix[:, :k].sum() == sum(1 for r in synthetic["results"] if r["score"] >= score)
    if score < 0.5:  # the synthetic errors all show: confusions, misses, background
        off_diagonal = matrix[:k, :k] - np.diag(np.diag(matrix[:k, :k]))
        assert off_diagonal.sum() > 0 and matrix[:k, k].sum() > 0 and matrix[k, :k].sum() > 0


def test_diagonal_equals_cocoevals_true_positives_above_the_score(synthetic, synthetic_eval):
    score = 0.3
    coco_eval = synthetic_eval("segm")
    matrix = confusion_matrix(match_dataset(coco_eval.cocoGt, synthetic["results"], "segm", 0.5, score),
                              len(coco_eval.params.catIds))
    tp = [int(np.count_nonzero(s.tp >= score)) for s in category_scores(coco_eval, 0.5)]
    assert np.diag(matrix)[:-1].tolist() == tp
