"""The image pipeline: batches give the same predictions as single images, bad files are
listed and the others still processed, the json holds what was done on an interruption."""
import json
import os

import cv2
import numpy as np
import pytest

from condseg import Predictor
from condseg.inference.images import run_images


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor(*tiny_model, confidence_threshold=0.0)


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(3):
        image = np.random.default_rng(i).integers(0, 255, (72, 96, 3), dtype=np.uint8)  # one size: no padding
        paths.append(str(tmp_path / f"img{i}.png"))
        cv2.imwrite(paths[-1], image)
    return paths


def test_batches_agree_and_bad_files_are_listed(predictor, files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0garbage")
    inputs = [files[0], str(broken), files[1], files[2]]
    runs = {}
    for batch in (1, 3):
        outs = [str(tmp_path / f"b{batch}_{k}.png") for k in range(4)]
        js = str(tmp_path / f"b{batch}.json")
        s = run_images(predictor, inputs, outs, json_path=js, batch_size=batch, progress=False)
        assert s.images == 3 and [p for p, _ in s.problems] == [str(broken)]
        assert "not an image" in s.problems[0][1]
        assert [os.path.isfile(o) for o in outs] == [True, False, True, True]
        assert not np.array_equal(cv2.imread(outs[2]), cv2.imread(files[1]))  # drawn on
        runs[batch] = json.loads(open(js).read())
        assert s.instances == len(runs[batch]["annotations"]) > 0
    assert [im["file_name"] for im in runs[1]["images"]] == files
    assert [a["score"] for a in runs[1]["annotations"]] == pytest.approx(
        [a["score"] for a in runs[3]["annotations"]], abs=1e-4)


class _StopAt:
    """Wraps a predictor; its n-th model call is a Ctrl-C."""

    def __init__(self, inner, stop_at):
        self.inner, self.stop_at, self.calls = inner, stop_at, 0

    def predict_batch(self, images):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.inner.predict_batch(images)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_an_interrupted_run_writes_the_json_of_the_images_done(predictor, files, tmp_path):
    js = tmp_path / "partial.json"
    with pytest.raises(KeyboardInterrupt):
        run_images(_StopAt(predictor, 3), files, json_path=str(js), progress=False)
    assert [im["file_name"] for im in json.loads(js.read_text())["images"]] == files[:2]
    with pytest.raises(ValueError, match="batch_size"):
        run_images(predictor, files, batch_size=0)
