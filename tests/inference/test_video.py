"""The video pipeline: overlapped equals sequential at any batch size, an interrupted
run leaves a valid, shorter video and its json, measured frames per model call keep the
faster size."""
import json
import time

import cv2
import pytest

from condseg import Predictor
from condseg.inference.frames_per_call import FramesPerCall
from condseg.inference.results import decode_segmentation
from condseg.inference.video import run_video
from builders.videos import shapes_video


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor(*tiny_model, confidence_threshold=0.0)


@pytest.fixture(scope="module")
def avi(tmp_path_factory):
    return shapes_video(str(tmp_path_factory.mktemp("v") / "clip.avi"), frames=12)


def _count_frames(path):
    cap = cv2.VideoCapture(path)
    n = 0
    while cap.read()[0]:
        n += 1
    return n, cap.get(cv2.CAP_PROP_FPS), (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))


def _frames_json(path):
    with open(path) as f:
        return json.load(f)


def test_overlapped_sequential_and_batched_runs_agree(predictor, avi, tmp_path):
    runs = {}
    for name, overlap, batch in (("seq", False, 1), ("ovl", True, 1), ("ovl3", True, 3)):
        out, js = str(tmp_path / f"{name}.mp4"), str(tmp_path / f"{name}.json")
        s = run_video(predictor, avi, out, js, batch_size=batch, overlap=overlap, progress=False)
        assert s.frames == 12 and s.complete and s.errors == [] and s.batches == -(-12 // batch)
        assert _count_frames(out)[0] == 12
        runs[name] = _frames_json(js)
    ref = runs["seq"]
    for name in ("ovl", "ovl3"):
        for a, b in zip(ref["frames"], runs[name]["frames"]):
            assert a["frame"] == b["frame"]
            assert [r["track_id"] for r in a["instances"]] == [r["track_id"] for r in b["instances"]]
            for ra, rb in zip(a["instances"], b["instances"]):
                assert ra["category_id"] == rb["category_id"] and abs(ra["score"] - rb["score"]) < 1e-4
                ma, mb = decode_segmentation(ra["segmentation"]), decode_segmentation(rb["segmentation"])
                assert (ma != mb).mean() < 1e-3


class _FailingPredictor:
    """Wraps a predictor and raises on its n-th model call."""

    def __init__(self, inner, fail_at):
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def predict_batch(self, images):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("model failed")
        return self.inner.predict_batch(images)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("overlap", [False, True])
def test_an_interrupted_run_leaves_a_valid_shorter_video(predictor, avi, tmp_path, overlap):
    out, js = str(tmp_path / "partial.mp4"), str(tmp_path / "partial.json")
    with pytest.raises(RuntimeError, match="model failed"):
        run_video(_FailingPredictor(predictor, 6), avi, out, js, overlap=overlap, progress=False)
    n, fps, size = _count_frames(out)
    assert n == 5 and size == (128, 96) and fps == pytest.approx(12.0)
    data = _frames_json(js)
    assert data["complete"] is False and [f["frame"] for f in data["frames"]] == [0, 1, 2, 3, 4]


class _CallOverheadPredictor:
    """Wraps a predictor and adds a fixed cost to every model call (batching amortises it)."""

    def __init__(self, inner, seconds):
        self.inner, self.seconds = inner, seconds

    def predict_batch(self, images):
        time.sleep(self.seconds)
        return self.inner.predict_batch(images)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_measured_frames_per_call_keep_the_faster_size(predictor, avi, tmp_path):
    frames = FramesPerCall.measured((1, 2), calls=3)
    s = run_video(_CallOverheadPredictor(predictor, 0.3), avi, json_path=str(tmp_path / "f.json"), batch_size=frames,
                  progress=False)
    # 1, 2, 1, 2, 1, 2, 1, 2 (the first of each a warm-up): the 12 frames in 8 calls, then 2 kept
    assert s.frames == 12 and s.batches == 8 and frames.size == 2
    assert frames.description.startswith("2, measured on the first 12 frames")
