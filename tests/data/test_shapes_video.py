"""The generated shapes video: the frames, rate and size asked for, shapes that move."""
import os

import cv2
import numpy as np
import pytest

from condseg.data.shapes_video import main, moving_scenes, write_shapes_video


def test_scenes_move_and_stay_in_the_image():
    scenes = moving_scenes(30, 160, 120, seed=1)
    assert len(scenes) == 30
    first = np.array([s.center for s in scenes[0].shapes])
    last = np.array([s.center for s in scenes[-1].shapes])
    assert np.abs(last - first).max() > 5  # moved
    for sc in scenes:
        c = np.array([s.center for s in sc.shapes])
        assert (c >= 0).all() and (c[:, 0] <= 160).all() and (c[:, 1] <= 120).all()
    again = moving_scenes(3, 160, 120, seed=1)[2]  # a pure function of the seed
    assert [(s.center, s.angle) for s in again.shapes] == [(s.center, s.angle) for s in scenes[2].shapes]


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_written_video_and_truth(tmp_path, ext):
    path = str(tmp_path / f"v.{ext}")
    truth = write_shapes_video(path, num_frames=8, width=96, height=64, fps=10, with_truth=True)
    cap = cv2.VideoCapture(path)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 8 and frames[0].shape == (64, 96, 3)
    assert len(truth) == 8 and all(len(t) >= 1 for t in truth)
    assert all(m.shape == (64, 96) and m.any() for t in truth for _, m in t)


def test_command_line(tmp_path, capsys):
    out = str(tmp_path / "sub" / "clip.mp4")
    pngs = tmp_path / "pngs"
    assert main([out, "--frames", "3", "--size", "64x48", "--fps", "5", "--png-dir", str(pngs)]) == out
    assert "3 frames, 64x48" in capsys.readouterr().out
    assert sorted(os.listdir(pngs)) == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    assert cv2.imread(str(pngs / "frame_000002.png")).shape == (48, 64, 3)
    with pytest.raises(SystemExit):
        main([out, "--size", "big"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_shapes_video(str(tmp_path / "none" / "x.mp4"), 2)
