"""Inputs: folders, globs and files resolved, unreadable images named; video frames read
with bad ones named; batches."""
import os

import cv2
import numpy as np
import pytest

from condseg.inference.sources import (
    ImageReadError,
    VideoOpenError,
    batched,
    expand_image_inputs,
    open_video,
    read_frames,
    read_image,
)
from builders.videos import corrupt_mjpeg_frame, shapes_video, truncate


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


def test_16_bit_images_are_scaled_to_8_bits(tmp_path):
    deep = tmp_path / "deep.png"
    levels = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
    cv2.imwrite(str(deep), levels)
    image = read_image(str(deep))
    assert image.dtype == np.uint8 and np.array_equal(image[:, :, 0], (levels >> 8).astype(np.uint8))
    assert np.array_equal(image[:, :, 0], image[:, :, 2])  # grey: the same in every channel


@pytest.fixture(scope="module")
def avi(tmp_path_factory):
    return shapes_video(str(tmp_path_factory.mktemp("v") / "clip.avi"), frames=12)


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


def test_batched_fills_each_batch_before_the_next_item_is_read():
    pulled = []

    def items():
        for i in range(5):
            pulled.append(i)
            yield i

    batches = batched(items(), 2)
    assert next(batches) == [0, 1] and pulled == [0, 1]
    assert list(batches) == [[2, 3], [4]]
    assert list(batched([], 3)) == []
