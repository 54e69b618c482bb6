"""condseg.report.browse: ground truth as stored and as the training mapper feeds it (masks
on the pixels of their objects, resized and flipped with the image), drawn where the
masks are, and tiled into a contact sheet."""
import cv2
import numpy as np
import pytest

import builders.quirky_coco as qc
from condseg.data import CondsegDatasetMapper
from condseg.report.browse import (augmented_ground_truth, contact_sheet, draw_ground_truth, map_for_training,
                                 resize_ground_truth, select_indices, stored_ground_truth)
from condseg.data.coco import load_coco_instances
from condseg.inference.render import color_of, draw_instances

CLASSES = ["circle", "square", "triangle", "hexagon"]  # contiguous order of the quirky ids 3, 7, 42, 99


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    d = tmp_path_factory.mktemp("quirky")
    json_file, image_root = qc.make_quirky_coco(d)
    dicts = {x["image_id"]: x for x in load_coco_instances(json_file, image_root)}
    return dicts, qc.load_truth_masks(d)


def test_stored_ground_truth_has_the_drawn_masks_boxes_and_crowd(quirky):
    dicts, truth = quirky
    gt = stored_ground_truth(dicts[1])  # polygons, compressed and uncompressed RLE
    assert gt.image.shape == (96, 128, 3) and gt.image.dtype == np.uint8
    assert gt.masks.shape == (4, 96, 128)
    for k, ann_id in enumerate((101, 102, 103, 104)):
        assert np.array_equal(gt.masks[k], truth[ann_id]), ann_id
        ys, xs = np.nonzero(truth[ann_id])
        assert gt.boxes[k] == pytest.approx([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], abs=1.0)
    assert list(gt.classes) == [1, 2, 0, 1]  # square, triangle, circle, square
    crowd = stored_ground_truth(dicts[2])
    assert list(crowd.crowd) == [False, True, False, False]  # 202 is the crowd one; 203/204 were dropped
    empty = stored_ground_truth(dicts[qc.EMPTY_IMAGE_ID])
    assert empty.boxes.shape == (0, 4) and empty.masks is None


def test_drawing_colours_the_mask_pixels_with_class_names_and_leaves_an_empty_image_alone(quirky):
    dicts, _ = quirky
    gt = stored_ground_truth(dicts[2])
    drawn = draw_ground_truth(gt, CLASSES)
    changed = np.any(drawn != gt.image, axis=2)
    inside = gt.masks.any(axis=0)
    assert changed[inside].mean() > 0.95  # every mask tinted
    labels = ["triangle", "circle crowd", "square", "triangle"]
    near = np.zeros_like(inside)  # outside the masks, only the boxes and the label tabs beside them
    for (x0, y0, x1, y1), label in zip(gt.boxes.round().astype(int), labels):
        near[max(0, y0 - 20): y1 + 2, max(0, x0 - 1): max(x1, x0 + 10 * len(label)) + 2] = True
    assert not changed[~near].any() and changed[~inside].any()
    expected = draw_instances(gt.image, gt.boxes, gt.masks, labels, [color_of(c) for c in gt.classes])
    assert np.array_equal(drawn, expected)
    rgb = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]  # metadata thing_colors are RGB
    with_colors = draw_ground_truth(gt, CLASSES, rgb)
    bgr = [tuple(rgb[c][::-1]) for c in gt.classes]
    assert np.array_equal(with_colors, draw_instances(gt.image, gt.boxes, gt.masks, labels, bgr))
    empty = stored_ground_truth(dicts[qc.EMPTY_IMAGE_ID])
    assert np.array_equal(draw_ground_truth(empty, CLASSES), empty.image)


def _mapper(quickstart_cfg, *opts):
    cfg = quickstart_cfg("condinst_R18_shapes.yaml", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "1000",
                         *opts)
    return CondsegDatasetMapper(cfg, is_train=True), cfg.INPUT.FORMAT


def _assert_masks_on_their_objects(gt):
    """Each mask covers pixels of its class's colour (quirky objects are painted in it)."""
    assert gt.masks is not None and gt.masks.shape == (len(gt.classes), *gt.image.shape[:2])
    for mask, c in zip(gt.masks, gt.classes):
        core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # away from blurred edges
        color = gt.image[core].mean(axis=0)
        assert np.abs(color - qc.SHAPE_COLOR[CLASSES[c]]).max() < 30, (CLASSES[c], color)


@pytest.mark.parametrize("input_format", ["BGR", "RGB"])
def test_augmented_ground_truth_is_what_the_mapper_feeds_resized_and_flipped(quirky, quickstart_cfg, input_format):
    dicts, _ = quirky
    mapper, fmt = _mapper(quickstart_cfg, "INPUT.FORMAT", input_format)
    original = stored_ground_truth(dicts[1]).image
    flips = set()
    for seed in range(6):
        for image_id in (1, 3):  # RLE masks (BitMasks), polygons only (PolygonMasks)
            mapped = map_for_training(mapper, dicts[image_id], seed, image_id)
            gt = augmented_ground_truth(mapped, fmt)
            assert gt.image.shape == (64, 85, 3)  # shorter side INPUT.MIN_SIZE_TRAIN
            assert tuple(mapped["image"].shape[1:]) == gt.image.shape[:2]
            _assert_masks_on_their_objects(gt)
            assert not gt.crowd.any()
            if image_id == 1:
                resized = cv2.resize(original, (85, 64), interpolation=cv2.INTER_LINEAR).astype(int)
                plain, flipped = (np.abs(gt.image - r).mean() for r in (resized, resized[:, ::-1]))
                flips.add(bool(flipped < plain))
    assert flips == {True, False}  # INPUT.RANDOM_FLIP "horizontal": both happen


def test_the_augmentation_is_a_function_of_seed_and_index(quirky, quickstart_cfg):
    dicts, _ = quirky
    mapper, fmt = _mapper(quickstart_cfg, "INPUT.MIN_SIZE_TRAIN", "(48, 64, 80)")
    sizes = set()
    for seed in range(8):
        a = augmented_ground_truth(map_for_training(mapper, dicts[1], seed, 1), fmt)
        b = augmented_ground_truth(map_for_training(mapper, dicts[1], seed, 1), fmt)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
        sizes.add(min(a.image.shape[:2]))
    assert sizes <= {48, 64, 80} and len(sizes) > 1


def test_box_only_config_feeds_no_masks(quirky, quickstart_cfg):
    dicts, _ = quirky
    mapper, fmt = _mapper(quickstart_cfg, "MODEL.MASK_ON", "False")
    gt = augmented_ground_truth(map_for_training(mapper, dicts[3], 0, 3), fmt)
    assert gt.masks is None and gt.boxes.shape == (3, 4)
    assert draw_ground_truth(gt, CLASSES).shape == gt.image.shape


def test_resized_ground_truth_keeps_masks_and_boxes_on_the_image(quirky):
    dicts, truth = quirky
    gt = stored_ground_truth(dicts[1])
    small = resize_ground_truth(gt, 64)
    assert small.image.shape == (48, 64, 3) and small.masks.shape == (4, 48, 64)
    assert np.array_equal(small.image, cv2.resize(gt.image, (64, 48), interpolation=cv2.INTER_AREA))
    assert np.array_equal(small.masks[0], cv2.resize(truth[101].astype(np.uint8), (64, 48),
                                                     interpolation=cv2.INTER_NEAREST).astype(bool))
    assert small.boxes == pytest.approx(gt.boxes / 2)
    assert np.array_equal(small.classes, gt.classes) and resize_ground_truth(gt, 256).image.shape == (192, 256, 3)
    empty = resize_ground_truth(stored_ground_truth(dicts[qc.EMPTY_IMAGE_ID]), 64)
    assert empty.masks is None and empty.boxes.shape == (0, 4)


def test_selected_indices_are_distinct_sorted_and_seeded():
    a = select_indices(100, 8, seed=3)
    assert len(set(a)) == 8 and list(a) == sorted(a) and a.max() < 100
    assert np.array_equal(a, select_indices(100, 8, seed=3)) and not np.array_equal(a, select_indices(100, 8, seed=4))
    assert list(select_indices(5, 8, seed=0)) == [0, 1, 2, 3, 4]


def test_contact_sheet_tiles_images_scaled_into_square_cells():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (100, 50, 3), np.uint8), rng.integers(0, 255, (30, 60, 3), np.uint8),
              np.full((40, 40, 3), 200, np.uint8)]
    sheet = contact_sheet(images, columns=2, cell=50, gap=2)
    assert sheet.shape == (102, 102, 3)
    assert np.array_equal(sheet[0:50, 12:37], cv2.resize(images[0], (25, 50), interpolation=cv2.INTER_AREA))
    assert np.array_equal(sheet[0:50, 52:102][12:37], cv2.resize(images[1], (50, 25), interpolation=cv2.INTER_AREA))
    assert (sheet[52:102, 0:50] == 200).all()  # enlarged to fill its cell
    assert (sheet[52:102, 52:102] == 32).all()  # no fourth image: background
    with pytest.raises(ValueError):
        contact_sheet([])
