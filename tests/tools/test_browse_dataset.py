"""tools/browse_dataset.py end to end on tiny data: the built-in shapes as stored and
augmented, a quirky COCO json through DATASETS.COCO, an unknown dataset."""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

import builders.quirky_coco as qc
from builders.tools import load_tool

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "configs", "quickstart", "condinst_R18_shapes.yaml")
TINY_SHAPES = ["DATASETS.SHAPES.NUM_TRAIN", "6", "DATASETS.SHAPES.NUM_VAL", "2",
               "DATASETS.SHAPES.MIN_SIZE", "96", "DATASETS.SHAPES.MAX_SIZE", "128"]


tool = load_tool("browse_dataset")


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    mp = pytest.MonkeyPatch()
    mp.setenv("DETECTRON2_DATASETS", str(root))  # read when the tool registers the shapes datasets
    yield root
    mp.undo()


def _shapes_json(root):
    (path,) = [os.path.join(d, "annotations.json") for d, _, files in os.walk(root) if "annotations.json" in files
               and "train-" in d]
    with open(path) as f:
        return json.load(f), os.path.join(os.path.dirname(path), "images")


def _pngs(folder):
    return sorted(f for f in os.listdir(folder) if f[:3].isdigit() and f.endswith(".png"))


def test_stored_shapes_are_drawn_on_their_images_with_statistics(datasets_root, tmp_path, capsys):
    out = tmp_path / "browse"
    assert tool.main(["--config-file", CONFIG, "--output", str(out), "--num", "4", "--seed", "1", *TINY_SHAPES]) == 0
    printed = capsys.readouterr().out
    coco, image_root = _shapes_json(datasets_root)
    assert printed.startswith(f"condseg_shapes_train: 6 images, {len(coco['annotations'])} instances")

    stats = json.loads((out / "statistics.json").read_text())
    assert stats["dataset"] == "condseg_shapes_train" and stats["images"] == 6
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert stats["instances_per_class"] == {n: sum(names[a["category_id"]] == n for a in coco["annotations"])
                                            for n in names.values()}
    assert sum(stats["sizes"].values()) == len(coco["annotations"])
    assert cv2.imread(str(out / "statistics.png")) is not None

    files = _pngs(out)
    assert len(files) == 4
    by_name = {im["file_name"]: im for im in coco["images"]}
    for name in files:
        drawn = cv2.imread(str(out / name))
        image_info = by_name[name.split("_", 1)[1]]
        original = cv2.imread(os.path.join(image_root, image_info["file_name"]))
        assert drawn.shape == original.shape  # stored: the image's own size
        assert len(np.unique(drawn.reshape(-1, 3), axis=0)) > 50  # a picture, not one colour
        anns = [a for a in coco["annotations"] if a["image_id"] == image_info["id"]]
        masks = np.any([mask_util.decode(a["segmentation"]).astype(bool) for a in anns], axis=0)
        changed = np.any(drawn != original, axis=2)
        assert changed[masks].mean() > 0.95  # ground truth drawn where the masks are
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape == (320, 4 * 320 + 3 * 2, 3)


def test_augmented_images_have_the_mappers_size(datasets_root, tmp_path):
    out = tmp_path / "aug"
    sheet = tmp_path / "elsewhere" / "sheet.png"
    args = ["--config-file", CONFIG, "--output", str(out), "--num", "3", "--augment", "--columns", "2", "--cell", "100",
            "--sheet", str(sheet), *TINY_SHAPES, "INPUT.MIN_SIZE_TRAIN", "(64, 72)", "INPUT.MAX_SIZE_TRAIN", "1000"]
    assert tool.main(args) == 0
    coco, _ = _shapes_json(datasets_root)
    by_name = {im["file_name"]: im for im in coco["images"]}
    shorter = set()
    for name in _pngs(out):
        drawn = cv2.imread(str(out / name))
        info = by_name[name.split("_", 1)[1]]
        h, w = drawn.shape[:2]
        shorter.add(min(h, w))
        assert min(h, w) in (64, 72)  # INPUT.MIN_SIZE_TRAIN, the aspect ratio kept
        assert abs(max(h, w) / min(h, w) - max(info["height"], info["width"]) / min(info["height"], info["width"])) < 0.03
    assert cv2.imread(str(sheet)).shape == (202, 202, 3)
    # the same seed draws the same augmentation
    again = tmp_path / "again"
    assert tool.main([*args[:3], str(again), *args[4:]]) == 0
    for name in _pngs(out):
        assert np.array_equal(cv2.imread(str(out / name)), cv2.imread(str(again / name)))


def test_a_coco_json_from_the_config_with_its_quirks(tmp_path, capsys):
    json_file, image_root = qc.make_quirky_coco(tmp_path / "quirky")
    out = tmp_path / "out"
    rc = tool.main(["--config-file", CONFIG, "--dataset", "quirky", "--output", str(out), "--num", "10",
                    "DATASETS.COCO", f"[['quirky', '{json_file}', '{image_root}']]"])
    assert rc == 0
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["images"] == 6 and stats["images_without_annotations"] == 1 and stats["crowd_instances"] == 1
    assert list(stats["instances_per_class"]) == ["circle", "square", "triangle", "hexagon"]
    assert stats["instances_per_class"]["hexagon"] == 0
    files = _pngs(out)
    assert len(files) == 6  # --num larger than the dataset: all of it
    for name in files:
        drawn = cv2.imread(str(out / name))
        original = cv2.imread(os.path.join(image_root, name.split("_", 1)[1]))
        if name.endswith(f"img_{qc.EMPTY_IMAGE_ID:03d}.png"):
            assert np.array_equal(drawn, original)  # nothing to draw
        else:
            assert not np.array_equal(drawn, original)
    assert "images without annotations: 1" in capsys.readouterr().out
    augmented = tmp_path / "augmented"
    assert tool.main(["--config-file", CONFIG, "--dataset", "quirky", "--output", str(augmented), "--num", "10",
                      "--augment", "DATASETS.COCO", f"[['quirky', '{json_file}', '{image_root}']]"]) == 0
    assert len(_pngs(augmented)) == 5  # training does not see the empty image (DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    assert "not drawn: 1 image(s) without annotations (or with only crowd ones), which training leaves out" in capsys.readouterr().out


def test_an_unknown_dataset_is_named_with_the_registered_ones(tmp_path, capsys):
    json_file, image_root = qc.make_quirky_coco(tmp_path / "quirky")
    rc = tool.main(["--config-file", CONFIG, "--dataset", "mine_trian", "--output", str(tmp_path / "x"),
                    "DATASETS.COCO", f"[['mine_train', '{json_file}', '{image_root}']]"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "'mine_trian' is not registered" in err
    assert "condseg_shapes_train, condseg_shapes_val, mine_train" in err
    assert not (tmp_path / "x").exists()


def test_a_missing_json_and_a_bad_key_are_one_line_errors(tmp_path, capsys):
    rc = tool.main(["--config-file", CONFIG, "--dataset", "gone", "--output", str(tmp_path / "x"),
                    "DATASETS.COCO", f"[['gone', '{tmp_path / 'gone.json'}', '{tmp_path}']]"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "gone.json" in err and len(err.splitlines()) == 1
    assert tool.main(["--config-file", CONFIG, "--output", str(tmp_path / "x"), "INPUT.NO_SUCH_KEY", "1"]) == 1
    assert "INPUT.NO_SUCH_KEY" in capsys.readouterr().err


def test_an_unreadable_image_is_named_and_the_others_drawn(tmp_path, capsys):
    json_file, image_root = qc.make_quirky_coco(tmp_path / "quirky")
    os.remove(os.path.join(image_root, "img_003.png"))
    out = tmp_path / "out"
    rc = tool.main(["--config-file", CONFIG, "--dataset", "quirky", "--output", str(out), "--num", "6",
                    "DATASETS.COCO", f"[['quirky', '{json_file}', '{image_root}']]"])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"cannot draw {os.path.join(image_root, 'img_003.png')}:" in err
    assert len(_pngs(out)) == 5 and (out / "contact_sheet.png").exists()
