"""Inputs of the demo: image files, folders and globs, video files and cameras, read with
errors that name the file (or the frame), and grouped into batches for the model."""
import dataclasses
import glob
import logging
import math
import os
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "expand_image_inputs", "read_image",
           "VideoOpenError", "VideoInfo", "open_video", "read_frames", "batched"]

logger = logging.getLogger("condseg")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm")
DEFAULT_FPS = 30.0  # written when a source does not tell its frame rate (some webcams, streams)
MAX_TRAILING_FAILURES = 25  # consecutive undecodable frames after which a video is taken to end

T = TypeVar("T")


class ImageReadError(OSError):
    """An input image that cannot be read; the message names the file."""


class VideoOpenError(OSError):
    """A video file or camera that cannot be opened; the message names it."""


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def expand_image_inputs(inputs: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Resolve ``--input`` arguments to image files.

    Each argument is a file (taken as is), a folder (its files with an image extension,
    sorted by name; not recursive; hidden files ignored) or a glob pattern (``*``,
    ``?``, ``[``; sorted matches).

    Returns:
        files: in argument order, without duplicates.
        problems: ``(path, message)`` for an argument that matches nothing and for each
            non-image file found in a folder (skipped).
    """
    files, problems = [], []
    for arg in inputs:
        if os.path.isdir(arg):
            for name in sorted(os.listdir(arg)):
                path = os.path.join(arg, name)
                if name.startswith(".") or not os.path.isfile(path):
                    continue
                if _is_image_name(name):
                    files.append(path)
                else:
                    problems.append((path, "not an image file (extension not one of "
                                           f"{', '.join(IMAGE_EXTENSIONS)}): skipped"))
        elif os.path.exists(arg):
            files.append(arg)
        elif glob.has_magic(arg):
            matches = sorted(p for p in glob.glob(os.path.expanduser(arg)) if os.path.isfile(p))
            if not matches:
                problems.append((arg, "no file matches this pattern"))
            files.extend(matches)
        else:
            problems.append((arg, "no such file or folder"))
    return list(dict.fromkeys(files)), problems


def read_image(path: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR (grey and 16-bit images converted, EXIF orientation applied).

    OpenCV rather than detectron2's ``read_image``: the same pixels for 8-bit images, but
    PIL saturates 16-bit ones to white where OpenCV scales them to 8 bits.

    Raises:
        ImageReadError: the file is missing, unreadable, or not a decodable image.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read the file ({e.strerror or e})") from e
    if data.size == 0:
        raise ImageReadError(f"{path}: the file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"{path}: not an image OpenCV can decode (corrupt, or an unsupported format)")
    return image


@dataclasses.dataclass
class VideoInfo:
    """What a source announces: ``num_frames`` is None for cameras and streams."""

    name: str
    fps: float
    width: int
    height: int
    num_frames: Optional[int]


def open_video(source: Union[str, int]) -> Tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video file (a path) or a camera (an int index).

    Raises:
        VideoOpenError: missing file, a file OpenCV cannot demux, or a camera that cannot be opened.
    """
    if isinstance(source, int):
        name = f"webcam {source}"
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            raise VideoOpenError(f"{name}: cannot open the camera (is one connected at this index, and free?)")
    else:
        name = source
        if not os.path.isfile(source):
            raise VideoOpenError(f"{source}: no such video file")
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            raise VideoOpenError(f"{source}: cannot open this video (corrupt, or a format OpenCV cannot read)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not math.isfinite(fps) or fps <= 0:
        logger.warning("%s does not tell its frame rate: writing %.0f frames/s", name, DEFAULT_FPS)
        fps = DEFAULT_FPS
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    info = VideoInfo(name, fps, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     count if count > 0 and not isinstance(source, int) else None)
    return cap, info


def read_frames(cap: cv2.VideoCapture, info: VideoInfo,
                errors: List[Dict]) -> Iterator[Tuple[int, np.ndarray]]:
    """Decoded frames as ``(index, (H, W, 3) uint8 BGR)``, indices in decoding order.

    A frame that fails to decode between good ones is appended to ``errors`` as
    ``{"frame": index, "message"}`` and skipped. Failures up to the end of the video
    (or ``MAX_TRAILING_FAILURES`` in a row) end it: a video whose header announces more
    frames than it holds (a truncated file) adds one error saying where it ended.
    """
    index, failed = 0, []
    while True:
        ok, frame = cap.read()
        if ok:
            for i in failed:
                errors.append({"frame": i, "message": f"{info.name}: frame {i} could not be decoded (skipped)"})
            failed = []
            yield index, frame
        else:
            if info.num_frames is None or index >= info.num_frames or len(failed) >= MAX_TRAILING_FAILURES:
                break
            failed.append(index)
        index += 1
    if failed and info.num_frames is not None:
        errors.append({"frame": failed[0], "message": f"{info.name}: the video ends at frame {failed[0]}, "
                       f"before the {info.num_frames} frames its header announces (truncated?)"})


def batched(items: Iterable[T], size: int) -> Iterator[List[T]]:
    """Consecutive lists of ``size`` items (the last one shorter), pulled from ``items``
    only as each list fills."""
    batch: List[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
