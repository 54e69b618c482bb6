"""Outputs of the demo besides json: video files and windows on the screen."""
import os
import sys

import cv2
import numpy as np

__all__ = ["VideoSink", "display_available", "show_image"]


class VideoSink:
    """An output video: mp4 (``mp4v``) for ``.mp4``/``.m4v``/``.mov``, Motion-JPEG for
    ``.avi``. Always close it (it is a context manager): closing writes the index that
    makes the file playable."""

    FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}

    def __init__(self, path: str, fps: float, width: int, height: int):
        ext = os.path.splitext(path)[1].lower()
        if ext not in self.FOURCC:
            raise ValueError(f"{path}: output video must end in one of {', '.join(self.FOURCC)}")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{path}: the output folder {folder} does not exist")
        self.path, self.size = path, (int(width), int(height))
        self.writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*self.FOURCC[ext]), float(fps), self.size)
        if not self.writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write a video here (permissions? codec?)")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 BGR frame of the video's size."""
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"{self.path}: frame of {frame.shape[1]}x{frame.shape[0]}, "
                             f"video is {self.size[0]}x{self.size[1]}")
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def display_available() -> bool:
    """Whether a window can be shown (on Linux: an X11 or Wayland display is set)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def show_image(window: str, image: np.ndarray, wait_ms: int) -> None:
    """Show ``(H, W, 3)`` uint8 BGR ``image`` in ``window`` and wait up to ``wait_ms``
    for a key (0: until one is pressed).

    Raises:
        KeyboardInterrupt: the key was ``q`` or Esc (the viewer asks to stop).
    """
    cv2.imshow(window, image)
    if cv2.waitKey(wait_ms) & 0xFF in (ord("q"), 27):
        raise KeyboardInterrupt
