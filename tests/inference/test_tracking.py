"""IoUTracker: identities (hence colours) follow objects across frames."""
import numpy as np

from condseg.inference.tracking import IoUTracker


def test_overlap_decides_below_and_above_the_threshold():
    t = IoUTracker(iou_threshold=0.3)
    t.update([[0, 0, 10, 10]], [0])
    assert t.update([[5, 0, 15, 10]], [0]).tolist() == [0]  # IoU 50/150 = 0.33: continues
    assert t.update([[12, 0, 22, 10]], [0]).tolist() == [1]  # IoU 30/170 = 0.18: a new track


def test_empty_boxes_never_continue_a_track():
    t = IoUTracker()
    t.update([[5, 5, 5, 5], [0, 0, 10, 10]], [0, 0])
    ids = t.update([[5, 5, 5, 5], [0, 0, 10, 10]], [0, 0])  # the empty pair: 0/0, no overlap
    assert ids.tolist() == [2, 1] and t.update(np.zeros((0, 4)), []).tolist() == []


def test_moving_objects_keep_their_ids_whatever_the_detection_order():
    t = IoUTracker(iou_threshold=0.3)
    boxes = np.array([[0, 0, 20, 20], [50, 50, 80, 80]], float)
    first = t.update(boxes, [0, 1])
    assert first.tolist() == [0, 1]
    for step in range(1, 6):
        moved = boxes + [2 * step, step, 2 * step, step]
        ids = t.update(moved[::-1], [1, 0])  # listed in the other order
        assert ids.tolist() == [1, 0]


def test_new_objects_and_other_classes_get_new_ids():
    t = IoUTracker()
    t.update([[0, 0, 20, 20]], [0])
    ids = t.update([[0, 0, 20, 20], [100, 100, 120, 120]], [1, 0])  # same box, other class; a new object
    assert ids.tolist() == [1, 2]


def test_tracks_survive_short_gaps_and_expire_after_max_age():
    t = IoUTracker(max_age=2)
    t.update([[0, 0, 20, 20]], [0])
    t.update(np.zeros((0, 4)), [])
    t.update(np.zeros((0, 4)), [])
    assert t.update([[1, 1, 21, 21]], [0]).tolist() == [0]  # missed for 2 frames: same id
    for _ in range(3):
        t.update(np.zeros((0, 4)), [])
    assert t.update([[1, 1, 21, 21]], [0]).tolist() == [1]  # missed for 3 > max_age: new id


def test_one_track_is_given_to_one_detection_only():
    t = IoUTracker()
    t.update([[0, 0, 20, 20]], [0])
    ids = t.update([[0, 0, 20, 20], [1, 1, 21, 21]], [0, 0])
    assert sorted(ids.tolist()) == [0, 1] and ids[0] == 0  # the better overlap keeps the id
