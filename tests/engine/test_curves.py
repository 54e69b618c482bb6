"""condseg.engine.curves: metrics.json written by detectron2's JSONWriter reads back as
the series that were put; resumed runs, files being written, malformed lines; smoothing,
keys, labels and the figure."""
import json
import math
import os

import cv2
import numpy as np
import pytest

from builders.metrics import write_metrics
from condseg.engine.curves import (MetricsFormatError, RunMetrics, metrics_file, parse_metrics, plot_curves, read_run,
                                   run_labels, select_keys, smooth)


def _as_dict(series):
    return {int(i): float(v) for i, v in zip(series.iterations, series.values)}


def test_a_jsonwriter_file_reads_back_as_the_values_put_at_their_iterations(tmp_path):
    path, expected = write_metrics(tmp_path / "run", max_iter=40, period=10, eval_period=20)
    run = read_run(str(tmp_path / "run"))
    assert run.source == path and run.label == "run"
    assert set(run.series) >= set(expected)
    for key, points in expected.items():
        assert _as_dict(run.series[key]) == pytest.approx(points), key
    # the evaluation during training shares the writer's line; the final one is at max_iter
    assert list(run.series["segm/AP"].iterations) == [19, 40]
    assert list(run.series["total_loss"].iterations) == [9, 19, 29, 39]


def test_a_resumed_run_appending_to_the_file_replaces_the_iterations_it_redoes(tmp_path):
    folder = tmp_path / "run"
    write_metrics(folder, max_iter=40, period=10, eval_period=0)  # a first run, "killed" after iteration 39
    _, resumed = write_metrics(folder, max_iter=50, period=10, eval_period=0, start_iter=20, offset=1.0)
    series = read_run(str(folder)).series["total_loss"]
    assert list(series.iterations) == [9, 19, 29, 39, 49]
    first = write_metrics(tmp_path / "ref", max_iter=40, period=10, eval_period=0)[1]["total_loss"]
    assert series.values[:2] == pytest.approx([first[9], first[19]])  # kept from the first run
    assert series.values[2:] == pytest.approx([resumed["total_loss"][i] for i in (29, 39, 49)])  # the resumed run's


def test_a_last_line_being_written_is_ignored_but_a_broken_line_names_file_and_line(tmp_path):
    good = json.dumps({"iteration": 19, "total_loss": 2.0}) + "\n"
    series = parse_metrics(good + '{"iteration": 39, "total_lo', "m.json")  # no newline yet: being written
    assert list(series["total_loss"].iterations) == [19]
    with pytest.raises(MetricsFormatError, match=r"^m\.json:2: not a json object"):
        parse_metrics(good + '{"iteration": 39, "total_lo\n' + good, "m.json")
    with pytest.raises(MetricsFormatError, match=r"^m\.json:3: expected a json object, got list"):
        parse_metrics(good + "\n[1, 2]\n", "m.json")
    with pytest.raises(MetricsFormatError, match=r"^m\.json:2: no integer 'iteration'"):
        parse_metrics(good + json.dumps({"total_loss": 1.0}) + "\n", "m.json")
    with pytest.raises(MetricsFormatError, match=r"^m\.json:1: no integer 'iteration' \(got 1\.5\)"):
        parse_metrics(json.dumps({"iteration": 1.5, "lr": 0.1}) + "\n", "m.json")
    with pytest.raises(MetricsFormatError, match=r"^m\.json: no metrics"):
        parse_metrics("\n\n", "m.json")


def test_a_malformed_file_on_disk_is_named_with_its_line(tmp_path):
    path, _ = write_metrics(tmp_path / "run", max_iter=30, period=10)
    with open(path, "a") as f:
        f.write("not json\n")
    lines = sum(1 for _ in open(path))
    with pytest.raises(MetricsFormatError, match=rf"^{path}:{lines}: not a json object"):
        read_run(path)


def test_non_numeric_values_are_skipped_and_nan_is_kept():
    text = json.dumps({"iteration": 9, "total_loss": float("nan"), "note": "x", "flag": True, "lr": 0.1}) + "\n"
    series = parse_metrics(text)
    assert set(series) == {"total_loss", "lr"}
    assert math.isnan(series["total_loss"].values[0])


def test_a_missing_run_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no metrics.json"):
        metrics_file(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"nope\.json: no such file"):
        read_run(str(tmp_path / "nope.json"))


def test_smoothing_takes_a_centred_window_shorter_at_the_ends():
    values = np.array([0.0, 10.0, 0.0, 10.0, 0.0])
    assert smooth(values, 3, "median") == pytest.approx([5.0, 0.0, 10.0, 0.0, 5.0])
    assert smooth(values, 3, "mean") == pytest.approx([5.0, 10 / 3, 20 / 3, 10 / 3, 5.0])
    assert smooth(values, 1) == pytest.approx(values)
    with_nan = smooth(np.array([1.0, np.nan, 3.0, np.nan, np.nan, np.nan]), 3, "mean")
    assert with_nan[:3] == pytest.approx([1.0, 2.0, 3.0]) and math.isnan(with_nan[4])
    with pytest.raises(ValueError, match="smoothing mode 'max'"):
        smooth(values, 3, "max")


def _run(source, keys):
    from condseg.engine.curves import Series

    return RunMetrics(source, source, {k: Series(np.array([1]), np.array([1.0])) for k in keys})


def test_default_keys_are_the_losses_lr_and_each_tasks_ap_and_patterns_select():
    a = _run("a", ["total_loss", "loss_mask", "loss_fcos_cls", "lr", "time", "segm/AP", "segm/AP50", "bbox/AP"])
    b = _run("b", ["total_loss", "loss_rpn_cls", "loss_mask", "lr", "bbox/AP", "data/skipped_images",
                   "rpn/num_pos_anchors", "val2/segm/AP", "segm/AP-ring"])
    assert select_keys([a, b]) == ["total_loss", "loss_fcos_cls", "loss_mask", "loss_rpn_cls", "lr", "bbox/AP",
                                   "segm/AP", "val2/segm/AP"]
    assert select_keys([a, b], ["segm/AP*", "lr", "segm/AP"]) == ["segm/AP", "segm/AP-ring", "segm/AP50", "lr"]
    with pytest.raises(KeyError, match=r"'keypoints/AP' matches no key of a, b; there are: bbox/AP"):
        select_keys([a, b], ["keypoints/AP"])


def test_labels_are_folder_names_told_apart_by_their_parents():
    assert run_labels(["/x/condinst/metrics.json", "/x/mask_rcnn/metrics.json"]) == ["condinst", "mask_rcnn"]
    assert run_labels(["/a/run/metrics.json", "/b/run/metrics.json"]) == ["a/run", "b/run"]
    assert run_labels(["/a/run/metrics.json", "/a/run/metrics.json"]) == ["run", "run"]


def _has_color(image_bgr, rgb, tol=40):
    return bool((np.abs(image_bgr[:, :, ::-1].astype(int) - np.array(rgb)).max(axis=2) < tol).sum() > 50)


def test_the_figure_draws_every_run_in_its_own_colour(tmp_path):
    write_metrics(tmp_path / "condinst", losses=("loss_fcos_cls", "loss_mask"))
    write_metrics(tmp_path / "mask_rcnn", losses=("loss_cls", "loss_mask"), offset=0.5)
    runs = [read_run(str(tmp_path / "condinst")), read_run(str(tmp_path / "mask_rcnn"))]
    out = str(tmp_path / "curves.png")
    plot_curves(runs, select_keys(runs), out, smooth_window=3)
    image = cv2.imread(out)
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 400
    assert _has_color(image, (31, 119, 180)) and _has_color(image, (255, 127, 14))  # matplotlib's C0 and C1
    only_first = str(tmp_path / "one.png")
    plot_curves(runs[:1], ["loss_fcos_cls"], only_first)
    one = cv2.imread(only_first)
    assert _has_color(one, (31, 119, 180)) and not _has_color(one, (255, 127, 14))
    assert os.path.getsize(out) > os.path.getsize(only_first)
