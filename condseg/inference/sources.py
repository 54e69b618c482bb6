"""Image inputs of the demo: files, folders and globs, read with errors that name the file."""
import glob
import os
from typing import List, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "expand_image_inputs", "read_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm")


class ImageReadError(OSError):
    """An input image that cannot be read; the message names the file."""


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
