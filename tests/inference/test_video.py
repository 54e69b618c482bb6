"""The video pipeline: frames read with bad ones named, overlapped equals sequential,
an interrupted run leaves a valid, shorter video."""
import json

import cv2
import numpy as np
import pytest

from condseg import Predictor
from condseg.inference.results import decode_segmentation
from condseg.inference.video import VideoOpenError, VideoSink, open_video, read_frames, run_video
from videos import corrupt_mjpeg_frame, shapes_video, truncate


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


def test_a_corrupt_frame_in_the_middle_is_skipped_and_named(avi, tmp_path):
    bad = str(tmp_path / "bad.avi")
    corrupt_mjpeg_frame(avi, bad, 5)
    cap, info = open_video(bad)
    errors = []
    indices = [i for i, _ in read_frames(cap, info, errors)]
    assert indices == [i for i in range(12) if i != 5]
    assert errors == [{"frame": 5, "message": f"{bad}: frame 5 could not be decoded (skipped)"}]
    # the frames after it are the right ones
    cap2, _ = open_video(avi)
    good = [f for _, f in read_frames(cap2, info, [])]
    cap, _ = open_video(bad)
    after = [f for i, f in read_frames(cap, info, []) if i == 6][0]
    assert np.array_equal(after, good[6])


def test_a_truncated_video_says_where_it_ends(avi, tmp_path):
    cut = str(tmp_path / "cut.avi")
    truncate(avi, cut)
    cap, info = open_video(cut)
    errors = []
    n = len(list(read_frames(cap, info, errors)))
    assert 0 < n < 12
    assert len(errors) == 1 and f"ends at frame {n}, before the 12 frames" in errors[0]["message"]


def test_videos_that_cannot_be_opened(tmp_path):
    with pytest.raises(VideoOpenError, match=r"nope\.mp4: no such video file"):
        open_video(str(tmp_path / "nope.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoOpenError, match=r"junk\.mp4: cannot open this video"):
        open_video(str(junk))


def test_sink_checks_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoSink(str(tmp_path / "no" / "out.mp4"), 10, 32, 32)
    with pytest.raises(ValueError, match=r"must end in one of"):
        VideoSink(str(tmp_path / "out.gif"), 10, 32, 32)


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
