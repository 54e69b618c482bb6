"""Frame-to-frame identities for the video demo, so that an object keeps its colour.

A greedy IoU tracker (no motion model): a detection continues the track of the same
class whose last box overlaps it most, if that IoU is at least ``iou_threshold``;
tracks not matched for more than ``max_age`` frames are forgotten, so an object that
is missed for a few frames (occlusion, a low score) gets its colour back.

Ours, not detectron2's trackers: theirs match detections across classes, and their
Hungarian ones also pair boxes below the IoU threshold, so ids pass between objects.
"""
from typing import List

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["IoUTracker"]


class IoUTracker:
    """Assigns a track id (an int, 0, 1, 2, ... in order of appearance) to every detection.

    Args:
        iou_threshold: least box IoU with a track's last box to continue it.
        max_age: frames a track survives without a match.
    """

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 10):
        self.iou_threshold = iou_threshold
        self.max_age = max_age
        self._boxes = np.zeros((0, 4))
        self._classes = np.zeros((0,), np.int64)
        self._ids = np.zeros((0,), np.int64)
        self._age = np.zeros((0,), np.int64)
        self._next_id = 0

    def update(self, boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Detections of the next frame -> ``(N,)`` int64 track ids.

        Args:
            boxes: ``(N, 4)`` XYXY_ABS.
            classes: ``(N,)`` class indices; a track continues only within its class.
        """
        boxes = np.ascontiguousarray(boxes, np.float64).reshape(-1, 4)  # torch takes no negative strides
        classes = np.asarray(classes, np.int64).reshape(-1)
        n, t = len(boxes), len(self._ids)
        ids = np.full((n,), -1, np.int64)
        if n and t:
            iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(self._boxes))
            iou = iou.nan_to_num_(0.0).numpy()  # two empty boxes: 0/0, no overlap
            iou[classes[:, None] != self._classes[None, :]] = 0.0
            order = np.argsort(-iou, axis=None, kind="stable")
            used_det, used_track = set(), set()
            for flat in order:
                d, k = divmod(int(flat), t)
                if iou[d, k] < self.iou_threshold:
                    break
                if d in used_det or k in used_track:
                    continue
                ids[d] = self._ids[k]
                used_det.add(d)
                used_track.add(k)
        matched = set(ids[ids >= 0].tolist())
        new = ids < 0
        ids[new] = np.arange(self._next_id, self._next_id + int(new.sum()))
        self._next_id += int(new.sum())
        # tracks: this frame's detections, plus the unmatched old tracks that are young enough
        keep = [k for k in range(t) if self._ids[k] not in matched and self._age[k] + 1 <= self.max_age]
        self._boxes = np.concatenate([boxes, self._boxes[keep]])
        self._classes = np.concatenate([classes, self._classes[keep]])
        self._ids = np.concatenate([ids, self._ids[keep]])
        self._age = np.concatenate([np.zeros((n,), np.int64), self._age[keep] + 1])
        return ids

    @property
    def num_tracks(self) -> int:
        """Tracks alive now (seen within the last ``max_age`` frames)."""
        return len(self._ids)

    def active_ids(self) -> List[int]:
        return self._ids.tolist()
