"""draw_instances: masks tinted where they are and nowhere else; boxes and labels drawn."""
import numpy as np

from condseg.inference.render import PALETTE, color_of, draw_instances, instance_labels


def _scene():
    image = np.full((60, 80, 3), 100, np.uint8)
    masks = np.zeros((2, 60, 80), bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 35:50, 50:75] = True
    return image, masks


def test_masks_are_tinted_inside_and_untouched_outside():
    image, masks = _scene()
    out = draw_instances(image, None, masks, None, [(0, 0, 255), (255, 0, 0)], alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    inner = np.zeros_like(masks[0])
    inner[12:28, 12:28] = True  # away from the outline
    assert np.abs(out[inner].astype(int) - [50, 50, 178]).max() <= 1  # 0.5 * grey + 0.5 * red (BGR)
    union = masks.any(0)
    assert np.array_equal(out[~union], image[~union])  # outlines are drawn inside the mask
    assert not np.array_equal(out, image)
    assert np.array_equal(image, np.full((60, 80, 3), 100, np.uint8))  # the input is not modified


def test_boxes_and_labels_are_drawn():
    image, masks = _scene()
    boxes = np.array([[10, 10, 30, 30], [50, 35, 75, 50]], np.float32)
    out = draw_instances(image, boxes, None, ["circle 90%", "star 55%"], [(0, 0, 255), (255, 0, 0)])
    assert (out[30, 15:25] != 100).any()  # bottom edge of box 0
    assert (out[0:10, 10:40] != 100).any()  # label tab above box 0
    assert np.array_equal(out[55:, :45], image[55:, :45])  # nothing far from both


def test_empty_and_empty_masks():
    image, _ = _scene()
    assert np.array_equal(draw_instances(image, None, None, None, []), image)
    empty = np.zeros((1, 60, 80), bool)
    assert np.array_equal(draw_instances(image, None, empty, None, [(1, 2, 3)]), image)


def test_colors_and_labels():
    assert color_of(3) == color_of(3 + len(PALETTE)) and color_of(0) != color_of(1)
    assert len(set(PALETTE)) == len(PALETTE)
    assert instance_labels([0, 5], [0.904, 0.5], ["circle"]) == ["circle 90%", "5 50%"]


def test_labels_of_overlapping_detections_do_not_cover_each_other():
    image = np.full((80, 120, 3), 100, np.uint8)
    boxes = np.array([[20, 30, 90, 70], [20, 30, 90, 70]], np.float32)  # one object, two detections
    red, blue = (0, 0, 255), (255, 0, 0)
    out = draw_instances(image, boxes, None, ["ring 40%", "ellipse 55%"], [red, blue])
    is_red, is_blue = np.all(out == red, axis=2), np.all(out == blue, axis=2)
    # the last instance's tab keeps its place above the box; the other's moves below it
    # (row 30 is the boxes' top edge) instead of being painted over
    assert is_blue[:30, 20:40].sum() > 100 and not is_red[:30].any()
    assert is_red[31:55, 21:40].sum() > 100


def test_a_later_mask_does_not_hide_an_earlier_label():
    image = np.full((80, 120, 3), 100, np.uint8)
    boxes = np.array([[10, 30, 60, 60], [0, 0, 120, 80]], np.float32)
    masks = np.zeros((2, 80, 120), bool)
    masks[1] = True  # covers the whole image, label tabs included
    red, blue = (0, 0, 255), (255, 0, 0)
    out = draw_instances(image, boxes, masks, ["star 90%", "ring 50%"], [red, blue], alpha=0.5)
    # the mask tints everything drawn before it; pure red is instance 0's tab, drawn after
    assert np.all(out == red, axis=2).sum() > 100
