"""tools/plot_curves.py end to end: two runs written by detectron2's JSONWriter side by
side, key patterns, and one-line errors naming the file and line."""
import os

import cv2
import numpy as np

from builders.metrics import write_metrics
from builders.tools import load_tool


tool = load_tool("plot_curves")


def _pixels_of(image_bgr, rgb, tol=40):
    return int((np.abs(image_bgr[:, :, ::-1].astype(int) - np.array(rgb)).max(axis=2) < tol).sum())


def _two_runs(tmp_path):
    write_metrics(tmp_path / "condinst", losses=("loss_fcos_cls", "loss_mask"))
    path, _ = write_metrics(tmp_path / "mask_rcnn", losses=("loss_cls", "loss_mask"), offset=0.5)
    return str(tmp_path / "condinst"), path  # a folder and a file


def test_two_runs_side_by_side(tmp_path, capsys):
    folder, file = _two_runs(tmp_path)
    out = tmp_path / "curves.png"
    assert tool.main([folder, file, "--output", str(out), "--smooth", "3", "--smooth-mode", "mean"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("condinst: iterations 9-40, last total_loss")
    assert printed[1].startswith("mask_rcnn: iterations 9-40") and "segm/AP 7.5" in printed[1]  # 0.5 + 3 + 40 / 10
    assert printed[2] == (f"{out}: total_loss, loss_cls, loss_fcos_cls, loss_mask, lr, bbox/AP, segm/AP")
    image = cv2.imread(str(out))
    assert image is not None and len(np.unique(image.reshape(-1, 3), axis=0)) > 20
    assert _pixels_of(image, (31, 119, 180)) > 200 and _pixels_of(image, (255, 127, 14)) > 200  # C0, C1: a run each


def test_keys_and_labels(tmp_path, capsys):
    folder, file = _two_runs(tmp_path)
    out = tmp_path / "ap.png"
    assert tool.main([folder, file, "--output", str(out), "--keys", "segm/AP*", "--labels", "a", "b"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{out}: segm/AP, segm/AP50"
    assert tool.main([folder, "--output", str(out), "--keys", "loss_rpn*"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --keys 'loss_rpn*' matches no key of ") and "there are: bbox/AP" in err


def test_errors_name_the_file_and_line(tmp_path, capsys):
    folder, file = _two_runs(tmp_path)
    with open(file, "a") as f:
        f.write('{"iteration": 41, "total_loss": }\n{"iteration": 42}\n')
    lines = sum(1 for _ in open(file))
    out = str(tmp_path / "x.png")
    assert tool.main([folder, file, "--output", out]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {file}:{lines - 1}: not a json object") and len(err.splitlines()) == 1
    assert not os.path.exists(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert tool.main([str(empty), "--output", out]) == 1
    assert f"{empty / 'metrics.json'}: no such file (the folder {empty} has no metrics.json)" in capsys.readouterr().err
    assert tool.main([folder, "--output", str(tmp_path / "no" / "dir.png")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert tool.main([folder, file, "--output", out, "--labels", "one"]) == 1
    assert "--labels: 1 names for 2 runs" in capsys.readouterr().err
