"""Image inputs: folders, globs and files resolved; unreadable files named."""
import os

import cv2
import numpy as np
import pytest

from condseg.inference.sources import ImageReadError, expand_image_inputs, read_image


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("b.png", "a.jpg"):
        cv2.imwrite(str(d / name), np.full((8, 9, 3), 50, np.uint8))
    (d / "notes.txt").write_text("not an image")
    (d / ".hidden.png").write_bytes(b"")
    (d / "sub").mkdir()
    return d


def test_folder_glob_and_file(folder, tmp_path):
    files, problems = expand_image_inputs([str(folder)])
    assert [os.path.basename(f) for f in files] == ["a.jpg", "b.png"]
    assert len(problems) == 1 and problems[0][0].endswith("notes.txt") and "not an image" in problems[0][1]
    files, problems = expand_image_inputs([str(folder / "*.png"), str(folder / "b.png")])
    assert [os.path.basename(f) for f in files] == ["b.png"] and problems == []  # no duplicates


def test_inputs_that_match_nothing(tmp_path):
    files, problems = expand_image_inputs([str(tmp_path / "missing.jpg"), str(tmp_path / "*.jpeg")])
    assert files == []
    assert [m for _, m in problems] == ["no such file or folder", "no file matches this pattern"]


def test_read_image_errors_name_the_file(folder, tmp_path):
    assert read_image(str(folder / "a.jpg")).shape == (8, 9, 3)
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.zeros((4, 5), np.uint16))
    assert read_image(str(grey)).shape == (4, 5, 3)
    with pytest.raises(ImageReadError, match=r"missing\.png: cannot read"):
        read_image(str(tmp_path / "missing.png"))
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg: the file is empty"):
        read_image(str(tmp_path / "empty.jpg"))
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(100))
    with pytest.raises(ImageReadError, match=r"corrupt\.jpg: not an image"):
        read_image(str(tmp_path / "corrupt.jpg"))
