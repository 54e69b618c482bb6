"""The matching behind the confusion matrix and the gallery, on hand-made IoUs."""
import numpy as np

from condseg.report.matching import match_image


def test_own_class_first_then_confusion_then_crowd():
    # detections by descending score: 0 (class 1), 1 (class 0), 2 (class 2), 3 (class 0)
    ious = np.array([
        [0.9, 0.6, 0.0],  # class 1: overlaps gt 0 (class 0) most, but takes gt 1, its own class
        [0.7, 0.0, 0.0],  # class 0: takes gt 0
        [0.0, 0.0, 0.55],  # class 2 on gt 2 of class 1: a confusion
        [0.8, 0.0, 0.0],  # class 0: gt 0 is taken -> on the crowd region, or background
    ])
    gt_classes, dt_classes = np.array([0, 1, 1]), np.array([1, 0, 2, 0])
    crowd = np.array([[0.0], [0.0], [0.0], [0.7]])
    dt_to_gt, gt_to_dt, on_crowd = match_image(ious, crowd, gt_classes, dt_classes, 0.5)
    assert dt_to_gt.tolist() == [1, 0, 2, -1]
    assert gt_to_dt.tolist() == [1, 0, 2]
    assert on_crowd.tolist() == [False, False, False, True]
    dt_to_gt, _, on_crowd = match_image(ious, crowd * 0, gt_classes, dt_classes, 0.5)
    assert dt_to_gt[3] == -1 and not on_crowd.any()


def test_threshold_and_empty_inputs():
    ious = np.array([[0.49]])
    dt_to_gt, gt_to_dt, _ = match_image(ious, np.zeros((1, 0)), np.array([0]), np.array([0]), 0.5)
    assert dt_to_gt.tolist() == [-1] and gt_to_dt.tolist() == [-1]
    dt_to_gt, gt_to_dt, _ = match_image(ious, np.zeros((1, 0)), np.array([0]), np.array([0]), 0.4)
    assert dt_to_gt.tolist() == [0] and gt_to_dt.tolist() == [0]
    dt_to_gt, gt_to_dt, on_crowd = match_image(np.zeros((0, 2)), np.zeros((0, 0)), np.array([0, 1]),
                                               np.zeros(0, int), 0.5)
    assert gt_to_dt.tolist() == [-1, -1] and dt_to_gt.size == 0 and on_crowd.size == 0
