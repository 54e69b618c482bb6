"""Unreadable images: replaced in training (counted, warned once, summarised), a run that
stops on them, a run whose data is mostly broken, evaluation on the rest, a check of all."""
import json
import os
import shutil

import pytest

from faultrun import Runs

pytestmark = pytest.mark.slow
BROKEN = ("000003.png", "000007.png")  # truncated, missing


@pytest.fixture(scope="module")
def broken(runs, baseline, tmp_path_factory):
    """The session's datasets with two training images broken: ``(runs, paths)``."""
    root = tmp_path_factory.mktemp("broken") / "datasets"
    shutil.copytree(runs.datasets, root)
    images = next(os.path.join(d, "images") for d in (root / "condseg_shapes").iterdir() if d.name.startswith("train"))
    truncated, missing = (os.path.join(images, name) for name in BROKEN)
    with open(truncated, "rb") as f:
        head = f.read(200)
    with open(truncated, "wb") as f:
        f.write(head)
    os.remove(missing)
    return Runs(str(root)), (truncated, missing)


def _metrics(out):
    with open(out / "metrics.json") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_unreadable_training_images_are_replaced_counted_and_named(broken, tmp_path):
    runs, (truncated, missing) = broken
    out = tmp_path / "out"
    code, log = runs.run(out, "DATALOADER.NUM_WORKERS", "2")
    assert code == 0, log[-3000:]
    for path, reason in ((truncated, "image file is truncated"), (missing, "No such file")):
        warnings = [line for line in log.splitlines() if "cannot be read, another one takes its place" in line and path in line]
        assert len(warnings) == 1 and reason in warnings[0] and "'condseg_shapes_train'" in warnings[0]
    skipped = [m["data/skipped_images"] for m in _metrics(out) if "data/skipped_images" in m]
    assert skipped == sorted(skipped) and skipped[-1] > 0
    summary = [line for line in log.splitlines() if "images were replaced because 2 files could not be read" in line]
    assert len(summary) == 1 and f"{int(skipped[-1])} images were replaced" in summary[0]
    assert (out / "model_final.pth").exists() and "Traceback" not in log


def test_bad_images_stop_stops_with_one_line_and_saves_the_last_iteration(broken, tmp_path):
    runs, _ = broken
    out = tmp_path / "out"
    code, log = runs.run(out, "DATALOADER.NUM_WORKERS", "0", "DATALOADER.BAD_IMAGES", "stop")
    assert code == 1
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and any(name in errors[0] for name in BROKEN), log[-3000:]
    assert "DATALOADER.BAD_IMAGES is 'stop'" in errors[0] and "Traceback" not in log
    if "is saved in" in errors[0]:  # not when the very first batch has the broken image
        assert os.path.exists(errors[0].split("is saved in ")[1].split(":")[0])


def test_mostly_broken_data_stops_the_run(broken, tmp_path):
    runs, _ = broken
    code, log = runs.run(tmp_path / "out", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.MAX_BAD_IMAGE_FRACTION", "0.05")
    assert code == 1
    assert "MAX_BAD_IMAGE_FRACTION 0.05): the training data is mostly unreadable" in log and "Traceback" not in log


def test_evaluation_leaves_out_unreadable_images_and_reports_on_the_rest(broken, tmp_path):
    runs, (truncated, missing) = broken
    code, log = runs.run(tmp_path / "out", "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "2",
                         "DATASETS.TEST", "('condseg_shapes_train',)", "MODEL.FCOS.INFERENCE_TH_TEST", "0.0")
    assert code == 0, log[-3000:]
    assert "condseg_shapes_train: 2 of 16 images could not be read and are left out of the evaluation" in log
    assert f"leaving out an image that cannot be read: {truncated}" in log
    assert "condseg_shapes_train segm: AP" in log and "condseg_shapes_train bbox: AP" in log


def test_check_data_lists_every_unreadable_image_at_once(broken, tmp_path):
    runs, (truncated, missing) = broken
    code, log = runs.run(tmp_path / "out", args=("--check-data",))
    assert code == 1
    lines = log.splitlines()
    assert f"condseg_shapes_train: {truncated}: OSError: image file is truncated" in lines
    assert any(line.startswith(f"condseg_shapes_train: {missing}: FileNotFoundError") for line in lines)
    assert "16 images of condseg_shapes_train read: 2 cannot be read" in lines
