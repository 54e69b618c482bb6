"""Tests of the generated shapes dataset (condseg.data.shapes): geometry, occlusion,
COCO files, determinism, caching/atomicity/locking and detectron2 registration."""
import json
import os
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from condseg.data import shapes
from condseg.data.shapes import write as shapes_write
from condseg.data.shapes import (
    SHAPES_CLASSES,
    Scene,
    Shape,
    generate_shapes_dataset,
    register_shapes_datasets,
    render_scene,
    sample_scene,
    shapes_dataset_dir,
)
from condseg.data.shapes.geometry import unit_area
from condseg.data.shapes.scene import _sample_geometry

TINY = dict(num_images=8, min_size=64, max_size=96, seed=3)


def _tiny(root, num_workers=1, **overrides):
    kwargs = dict(TINY, **overrides)
    return generate_shapes_dataset("train", root=str(root), num_workers=num_workers, **kwargs)


def _load(json_file):
    with open(json_file) as f:
        return json.load(f)


def _read_images(json_file):
    coco = _load(json_file)
    image_root = os.path.join(os.path.dirname(json_file), "images")
    return [cv2.imread(os.path.join(image_root, im["file_name"]), cv2.IMREAD_UNCHANGED)
            for im in coco["images"]]


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("shapes"))


def _empty_scene(height=80, width=100, shapes_=()):
    """A flat grey scene without noise or clutter holding the given shapes."""
    background = dict(colors=((128.0, 128.0, 128.0), (128.0, 128.0, 128.0)), direction=0.0,
                      noise_grid=np.zeros((2, 2, 3), np.float32), noise_amplitude=0.0, pattern=None)
    return Scene(height=height, width=width, background=background, clutter=[], shapes=list(shapes_))


def _disc(center, radius, color):
    """A circular "ellipse" shape with a flat colour."""
    return Shape(category_id=SHAPES_CLASSES.index("ellipse") + 1, center=center, scale=radius,
                 aspect=1.0, angle=0.0, geometry={}, color=color)


# ----------------------------------------------------------------------------- rendering


def test_classes():
    assert len(SHAPES_CLASSES) >= 5
    assert len(set(SHAPES_CLASSES)) == len(SHAPES_CLASSES)
    assert len(shapes.SHAPES_COLORS) == len(SHAPES_CLASSES)
    assert len(set(shapes.SHAPES_COLORS)) == len(SHAPES_CLASSES)


def test_occlusion_removes_covered_pixels_from_lower_mask():
    lower = _disc((40.0, 40.0), 20.0, (0, 0, 255))
    upper = _disc((60.0, 40.0), 20.0, (255, 0, 0))
    image, instances = render_scene(_empty_scene(shapes_=[lower, upper]))
    (_, m_low), (_, m_up) = instances
    assert not (m_low & m_up).any()
    # The top shape is complete (a disc of radius 20), the lower one lost the overlap.
    assert abs(m_up.sum() - np.pi * 20**2) < 0.05 * np.pi * 20**2
    assert m_up[40, 50] and not m_low[40, 50] and m_low[40, 25]
    # Painted pixels agree with the masks (flat colours: no shading, noise or clutter).
    assert (image[m_low] == (0, 0, 255)).all() and (image[m_up] == (255, 0, 0)).all()
    assert (image[~(m_low | m_up)] == 128).all()


def test_hidden_shape_is_dropped_and_not_painted():
    hidden = _disc((50.0, 40.0), 6.0, (0, 0, 255))
    cover = _disc((50.0, 40.0), 30.0, (0, 255, 0))
    mostly_hidden = _disc((70.0, 40.0), 12.0, (255, 0, 0))  # < 25% visible
    outside = _disc((150.0, 40.0), 10.0, (255, 255, 0))  # out of the image
    scene = _empty_scene(shapes_=[hidden, mostly_hidden, cover, outside])
    image, instances = render_scene(scene)
    masks = shapes.visible_shape_masks(scene)
    assert [m is not None for m in masks] == [False, False, True, False]
    assert len(instances) == 1 and np.array_equal(instances[0][1], masks[2])
    assert (image[masks[2]] == (0, 255, 0)).all()
    assert (image[~masks[2]] == 128).all()  # the dropped shapes are not painted


def test_border_truncation_keeps_visible_part_only():
    half_out = _disc((0.0, 40.0), 20.0, (0, 0, 255))  # half of it is left of the image
    _, [(_, mask)] = render_scene(_empty_scene(shapes_=[half_out]))
    assert abs(mask.sum() - np.pi * 20**2 / 2) < 0.1 * np.pi * 20**2 / 2
    assert mask[:, 0].any() and not mask[:, 25:].any()


@pytest.mark.parametrize("name", SHAPES_CLASSES)
def test_each_class_renders_a_plausible_area(name):
    """Every class is drawable and its unit-area estimate (used to size shapes) holds."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        geometry = _sample_geometry(rng, name)
        scale = 40 / np.sqrt(unit_area(name, geometry))  # aims at 40 x 40 px
        shape = Shape(category_id=SHAPES_CLASSES.index(name) + 1, center=(100.0, 100.0),
                      scale=scale, aspect=1.0, angle=float(rng.uniform(0, 6.3)),
                      geometry=geometry, color=(10, 200, 30))
        _, [(category_id, mask)] = render_scene(_empty_scene(200, 200, [shape]))
        assert category_id == SHAPES_CLASSES.index(name) + 1
        # cv2 fills every pixel the outline touches: up to ~+12% at this size.
        assert 0.98 * 1600 < mask.sum() < 1.2 * 1600


def test_ring_has_a_hole_and_star_is_concave():
    ring = Shape(category_id=SHAPES_CLASSES.index("ring") + 1, center=(50.0, 50.0), scale=30.0,
                 aspect=1.0, angle=0.0, geometry=dict(inner=0.6, shift=0.0), color=(0, 0, 255))
    _, [(_, mask)] = render_scene(_empty_scene(100, 100, [ring]))
    assert not mask[50, 50] and mask[50, 50 + 25]
    star = Shape(category_id=SHAPES_CLASSES.index("star") + 1, center=(50.0, 50.0), scale=30.0,
                 aspect=1.0, angle=0.0, geometry=dict(points=5.0, inner=0.4), color=(0, 0, 255))
    _, [(_, mask)] = render_scene(_empty_scene(100, 100, [star]))
    hull = cv2.convexHull(cv2.findNonZero(mask.astype(np.uint8)))
    assert mask.sum() < 0.7 * cv2.contourArea(hull)


def test_random_scenes_are_valid_and_span_coco_size_buckets():
    areas, classes = [], set()
    for k in range(20):
        rng = np.random.default_rng([0, k])
        scene = sample_scene(rng, 256 + 5 * k, 384 - 5 * k)
        image, instances = render_scene(scene)
        assert image.shape == (256 + 5 * k, 384 - 5 * k, 3) and image.dtype == np.uint8
        assert 1 <= len(instances) <= shapes.MAX_INSTANCES
        union = np.zeros(image.shape[:2], np.int32)
        for category_id, mask in instances:
            assert mask.dtype == bool and mask.shape == image.shape[:2]
            assert mask.sum() >= shapes.MIN_VISIBLE_PIXELS
            union += mask
            areas.append(int(mask.sum()))
            classes.add(category_id)
        assert union.max() <= 1  # disjoint
    areas = np.array(areas)
    assert (areas < 32**2).sum() >= 10
    assert ((areas >= 32**2) & (areas < 96**2)).sum() >= 10
    assert (areas >= 96**2).sum() >= 5
    assert classes == set(range(1, len(SHAPES_CLASSES) + 1))


def test_render_is_a_pure_function_of_the_scene():
    scene = sample_scene(np.random.default_rng(7), 120, 150)
    image1, inst1 = render_scene(scene)
    image2, inst2 = render_scene(scene)
    assert np.array_equal(image1, image2)
    assert len(inst1) == len(inst2)
    assert all(c1 == c2 and np.array_equal(m1, m2) for (c1, m1), (c2, m2) in zip(inst1, inst2))


# ----------------------------------------------------------------------------- files


def test_layout_and_coco_header(tiny_json):
    expected_dir = shapes_dataset_dir("train", 8, 64, 96, 3, os.path.dirname(
        os.path.dirname(os.path.dirname(tiny_json))))
    assert os.path.dirname(tiny_json) == expected_dir
    assert expected_dir.endswith(os.path.join("condseg_shapes", "train-n8-64x96-seed3"))
    coco = _load(tiny_json)
    assert coco["categories"] == [dict(id=i + 1, name=n, supercategory="shape")
                                  for i, n in enumerate(SHAPES_CLASSES)]
    assert "info" in coco and coco["licenses"]
    assert [im["file_name"] for im in coco["images"]] == [f"{k:06d}.png" for k in range(8)]
    assert len({im["id"] for im in coco["images"]}) == 8
    ann_ids = [a["id"] for a in coco["annotations"]]
    assert sorted(ann_ids) == list(range(1, len(ann_ids) + 1))
    # Nothing besides the final directory and the lock file is left in condseg_shapes/.
    parent = os.path.dirname(expected_dir)
    assert sorted(os.listdir(parent)) == [".train-n8-64x96-seed3.lock", "train-n8-64x96-seed3"]


def test_images_and_annotations_are_consistent(tiny_json):
    coco = _load(tiny_json)
    images = _read_images(tiny_json)
    by_image = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    categories = set()
    for info, image in zip(coco["images"], images):
        h, w = info["height"], info["width"]
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
        assert 64 <= h <= 96 and 64 <= w <= 96
        anns = by_image[info["id"]]
        assert shapes.MIN_INSTANCES <= len(anns) <= shapes.MAX_INSTANCES
        union = np.zeros((h, w), np.int32)
        for ann in anns:
            assert isinstance(ann["segmentation"]["counts"], str)
            assert ann["segmentation"]["size"] == [h, w]
            assert ann["iscrowd"] == 0
            mask = mask_util.decode(ann["segmentation"])
            assert mask.shape == (h, w)
            assert ann["area"] == mask.sum() > 0
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            union += mask
            categories.add(ann["category_id"])
        assert union.max() == 1  # masks of one image are disjoint
    assert len(categories) >= 5 and categories <= set(range(1, len(SHAPES_CLASSES) + 1))


def test_determinism_across_roots_and_worker_counts(tmp_path, tiny_json):
    other = _tiny(tmp_path / "b", num_workers=2)
    with open(tiny_json, "rb") as f1, open(other, "rb") as f2:
        assert f1.read() == f2.read()
    for a, b in zip(_read_images(tiny_json), _read_images(other)):
        assert np.array_equal(a, b)


def test_image_k_does_not_depend_on_the_number_of_images(tmp_path, tiny_json):
    more = _tiny(tmp_path, num_images=10)
    assert all(np.array_equal(a, b) for a, b in zip(_read_images(tiny_json), _read_images(more)))
    assert _load(more)["annotations"][:5] == _load(tiny_json)["annotations"][:5]


def test_different_seeds_differ(tmp_path, tiny_json):
    other = _tiny(tmp_path, seed=4)
    assert _load(other)["annotations"] != _load(tiny_json)["annotations"]
    assert not np.array_equal(_read_images(other)[0], _read_images(tiny_json)[0])


def test_existing_dataset_is_reused(tiny_json, monkeypatch):
    mtime = os.stat(tiny_json).st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated an existing dataset")

    monkeypatch.setattr(shapes_write, "_write_dataset", fail)
    root = tiny_json.split(os.sep + "condseg_shapes" + os.sep)[0]
    assert _tiny(root) == tiny_json
    assert os.stat(tiny_json).st_mtime_ns == mtime


def test_failed_generation_leaves_no_dataset(tmp_path, monkeypatch):
    calls = []
    real_render = shapes_write.render_scene

    def crash_midway(scene):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return real_render(scene)

    monkeypatch.setattr(shapes_write, "render_scene", crash_midway)
    with pytest.raises(RuntimeError, match="boom"):
        _tiny(tmp_path)
    parent = tmp_path / "condseg_shapes"
    assert [p for p in os.listdir(parent) if not p.endswith(".lock")] == []
    monkeypatch.setattr(shapes_write, "render_scene", real_render)
    assert os.path.isfile(_tiny(tmp_path))


def test_incomplete_leftovers_are_replaced(tmp_path):
    final_dir = shapes_dataset_dir("train", 8, 64, 96, 3, str(tmp_path))
    os.makedirs(os.path.join(final_dir, "images"))  # no annotations.json: incomplete
    stale_tmp = os.path.join(os.path.dirname(final_dir), ".train-n8-64x96-seed3.tmp-999999")
    os.makedirs(stale_tmp)
    json_file = _tiny(tmp_path)
    assert len(os.listdir(os.path.join(final_dir, "images"))) == 8
    assert len(_load(json_file)["images"]) == 8
    assert not os.path.exists(stale_tmp)


def test_other_generator_version_is_regenerated(tmp_path):
    json_file = _tiny(tmp_path)
    coco = _load(json_file)
    coco["info"]["version"] = "0"
    with open(json_file, "w") as f:
        json.dump(coco, f)
    assert _tiny(tmp_path) == json_file
    assert _load(json_file)["info"]["version"] == str(shapes.GENERATOR_VERSION)


def test_concurrent_callers_generate_once(tmp_path, monkeypatch):
    calls = []
    real_write = shapes_write._write_dataset

    def slow_write(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)  # let the other thread arrive while we hold the lock
        return real_write(*args, **kwargs)

    monkeypatch.setattr(shapes_write, "_write_dataset", slow_write)
    results = []
    threads = [threading.Thread(target=lambda: results.append(_tiny(tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 2 and results[0] == results[1] and os.path.isfile(results[0])


_HOLD_LOCK = """
import sys, time
from iopath.common.file_io import file_lock
lock, marks = sys.argv[1], sys.argv[2]
with file_lock(lock):
    open(marks + ".held", "w").close()
    time.sleep(1.0)
    open(marks + ".released", "w").close()
"""


def test_the_lock_holds_across_processes(tmp_path, monkeypatch):
    """Another process (a DDP rank) holding the split's lock makes a caller wait for it."""
    final_dir = shapes_dataset_dir("train", 8, 64, 96, 3, str(tmp_path))
    parent, name = os.path.split(final_dir)
    os.makedirs(parent)
    marks = str(tmp_path / "holder")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, os.path.join(parent, f".{name}"), marks])
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(marks + ".held"):
            assert holder.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.02)
        released_at_write = []
        real_write = shapes_write._write_dataset

        def recording_write(*args, **kwargs):
            released_at_write.append(os.path.exists(marks + ".released"))
            return real_write(*args, **kwargs)

        monkeypatch.setattr(shapes_write, "_write_dataset", recording_write)
        assert os.path.isfile(_tiny(tmp_path))
        assert released_at_write == [True]
    finally:
        holder.wait(timeout=60)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert shapes_dataset_dir("val", 5, 64, 96, 1) == os.path.join(
        str(tmp_path), "condseg_shapes", "val-n5-64x96-seed1")
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert shapes_dataset_dir("val", 5, 64, 96, 1) == os.path.join(
        "datasets", "condseg_shapes", "val-n5-64x96-seed1")


def test_cli_and_preview(tmp_path, capsys):
    preview = tmp_path / "preview.png"
    json_file = shapes.main(["--split", "val", "--num", "5", "--min-size", "64", "--max-size", "80",
                             "--root", str(tmp_path), "--workers", "1", "--preview", str(preview)])
    assert json_file == os.path.join(shapes_dataset_dir("val", 5, 64, 80, 1, str(tmp_path)), "annotations.json")
    assert json_file in capsys.readouterr().out
    grid = cv2.imread(str(preview))
    assert grid is not None and grid.shape[2] == 3 and grid.std() > 10


# ----------------------------------------------------------------------------- detectron2


@pytest.fixture
def restore_registration():
    yield
    register_shapes_datasets()  # back to the defaults registered at import


def test_registration(tmp_path, restore_registration):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    register_shapes_datasets(num_train=6, num_val=4, min_size=64, max_size=96, seed=5,
                             root=str(tmp_path))
    meta = MetadataCatalog.get("condseg_shapes_train")
    assert meta.thing_classes == SHAPES_CLASSES
    assert len(set(map(tuple, meta.thing_colors))) == len(SHAPES_CLASSES)
    assert meta.evaluator_type == "coco"
    assert not os.path.exists(meta.json_file)  # lazy: nothing generated yet

    dicts = DatasetCatalog.get("condseg_shapes_train")
    assert len(dicts) == 6 and os.path.isfile(meta.json_file)
    assert meta.json_file == os.path.join(
        shapes_dataset_dir("train", 6, 64, 96, 5, str(tmp_path)), "annotations.json")
    for d in dicts:
        assert os.path.isfile(d["file_name"])
        assert d["file_name"].startswith(meta.image_root)
        assert len(d["annotations"]) >= shapes.MIN_INSTANCES
        for ann in d["annotations"]:
            assert isinstance(ann["segmentation"], dict) and "counts" in ann["segmentation"]
            assert ann["bbox_mode"] == BoxMode.XYWH_ABS
            assert 0 <= ann["category_id"] < len(SHAPES_CLASSES)  # contiguous ids

    val = DatasetCatalog.get("condseg_shapes_val")
    assert len(val) == 4
    assert MetadataCatalog.get("condseg_shapes_val").json_file == os.path.join(
        shapes_dataset_dir("val", 4, 64, 96, 6, str(tmp_path)), "annotations.json")

    # Registering again with other sizes replaces the previous registration.
    register_shapes_datasets(num_train=3, num_val=2, min_size=64, max_size=80, seed=5,
                             root=str(tmp_path))
    assert len(DatasetCatalog.get("condseg_shapes_train")) == 3
    assert "64x80" in MetadataCatalog.get("condseg_shapes_val").json_file
