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
