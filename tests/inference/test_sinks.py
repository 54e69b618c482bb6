"""Outputs: video files that check their path and frames, and whether a window can be shown."""
import cv2
import numpy as np
import pytest

from condseg.inference import sinks
from condseg.inference.sinks import VideoSink, display_available


def test_sink_checks_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoSink(str(tmp_path / "no" / "out.mp4"), 10, 32, 32)
    with pytest.raises(ValueError, match=r"must end in one of"):
        VideoSink(str(tmp_path / "out.gif"), 10, 32, 32)


def test_sink_writes_a_playable_video_of_its_size(tmp_path):
    path = str(tmp_path / "out.avi")
    with VideoSink(path, 10, 32, 24) as sink:
        for v in (0, 128, 255):
            sink.write(np.full((24, 32, 3), v, np.uint8))
        with pytest.raises(ValueError, match="frame of 24x32, video is 32x24"):
            sink.write(np.zeros((32, 24, 3), np.uint8))
    assert sink.frames == 3
    cap = cv2.VideoCapture(path)
    means = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        means.append(frame.mean())
    assert means == pytest.approx([0, 128, 255], abs=3)


def test_display_follows_the_environment(monkeypatch):
    monkeypatch.setattr(sinks.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not display_available()
    monkeypatch.setenv("DISPLAY", ":0")
    assert display_available()


@pytest.mark.parametrize("key, stops", [(ord("q"), True), (27, True), (ord(" "), False), (-1, False)])
def test_q_or_esc_in_a_window_stops(monkeypatch, key, stops):
    shown = []
    monkeypatch.setattr(sinks.cv2, "imshow", lambda name, image: shown.append(name))
    monkeypatch.setattr(sinks.cv2, "waitKey", lambda ms: key)
    image = np.zeros((4, 4, 3), np.uint8)
    if stops:
        with pytest.raises(KeyboardInterrupt):
            sinks.show_image("w", image, 1)
    else:
        sinks.show_image("w", image, 1)
    assert shown == ["w"]
