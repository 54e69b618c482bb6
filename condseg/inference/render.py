"""Drawing predictions on an image with OpenCV: translucent masks with outlines, boxes,
and a "class score%" label per instance.

Pure functions of numpy arrays (no matplotlib); each mask is blended inside its own
bounding rectangle only, so drawing costs what the masks cover, not the whole image.
"""
import colorsys
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["PALETTE", "color_of", "draw_instances", "instance_labels"]


def _palette(n: int = 32) -> List[Tuple[int, int, int]]:
    """``n`` well separated saturated BGR colours (hues stepped by the golden ratio)."""
    colors = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        sat, val = (0.85, 0.95) if i % 2 == 0 else (0.65, 0.8)
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colors.append((int(b * 255), int(g * 255), int(r * 255)))
    return colors


PALETTE = _palette()


def color_of(key: int) -> Tuple[int, int, int]:
    """A fixed BGR colour for an integer key (a class index or a track id)."""
    return PALETTE[int(key) % len(PALETTE)]


def instance_labels(classes: Sequence[int], scores: Sequence[float], class_names: Sequence[str]) -> List[str]:
    """``"name 87%"`` per instance (the index itself when a class has no name)."""
    names = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in classes]
    return [f"{n} {100 * s:.0f}%" for n, s in zip(names, scores)]


def _mask_extent(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """Tight ``(y0, y1, x0, x1)`` (exclusive ends) of a bool mask, None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _text_color(color: Tuple[int, int, int]) -> Tuple[int, int, int]:
    b, g, r = color
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 150 else (255, 255, 255)


def draw_instances(image: np.ndarray, boxes: Optional[np.ndarray], masks: Optional[np.ndarray],
                   labels: Optional[Sequence[str]], colors: Sequence[Tuple[int, int, int]],
                   alpha: float = 0.5) -> np.ndarray:
    """Draw instances on a copy of ``image``.

    Args:
        image: ``(H, W, 3)`` uint8 BGR.
        boxes: ``(N, 4)`` XYXY_ABS pixels, or None for no boxes.
        masks: ``(N, H, W)`` bool, or None for no masks.
        labels: N strings drawn at the top-left box corner (at the mask's when no box), or None.
        colors: N BGR colours.
        alpha: mask opacity.

    Masks and boxes are drawn in order, so the last one ends on top. Labels are drawn
    after all of them, so no mask hides a label; the last instance's label is placed
    first, and each later placed label moves down past the tabs already placed rather
    than covering them (overlapping detections stay readable).

    Returns:
        ``(H, W, 3)`` uint8 BGR.
    """
    out = np.ascontiguousarray(image).copy()
    height, width = out.shape[:2]
    n = len(colors)
    thick = max(1, round(min(height, width) / 360))
    font_scale = 0.35 + 0.15 * thick
    anchors: List[Optional[Tuple[int, int, int]]] = [None] * n  # label corner x, y and the object's bottom
    for i in range(n):
        color = tuple(int(c) for c in colors[i])
        if masks is not None:
            extent = _mask_extent(masks[i])
            if extent is not None:
                y0, y1, x0, x1 = extent
                region = out[y0:y1, x0:x1]
                m = masks[i][y0:y1, x0:x1]
                tinted = cv2.addWeighted(region, 1.0 - alpha, np.full_like(region, color), alpha, 0.0)
                np.copyto(region, tinted, where=m[:, :, None])
                contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(region, contours, -1, color, thick, lineType=cv2.LINE_AA)
                anchors[i] = (x0, y0, y1)
        if boxes is not None:
            x0, y0, x1, y1 = (int(round(float(v))) for v in boxes[i])
            cv2.rectangle(out, (x0, y0), (x1, y1), color, thick, lineType=cv2.LINE_AA)
            anchors[i] = (x0, y0, y1)
    if labels is not None:
        placed: List[Tuple[int, int, int, int]] = []
        for i in reversed(range(n)):
            if anchors[i] is not None:
                color = tuple(int(c) for c in colors[i])
                placed.append(_draw_label(out, labels[i], anchors[i], color, font_scale, placed))
    return out


def _overlaps(a: Tuple[int, int, int, int], b: Tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_rect(image, text: str, anchor: Tuple[int, int, int], font_scale: float, placed):
    """``((x0, y0, x1, y1), text_height)`` of the tab for ``text``: just above the object's
    top-left corner ``anchor[:2]`` (below it when there is no room), moved down one tab
    height at a time past the rectangles in ``placed`` as long as it stays above the
    object's bottom ``anchor[2]``; where no such place is free it stays where it started."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    w, h = tw + 2, th + base + 2
    x = min(max(anchor[0], 0), max(image.shape[1] - w, 0))
    y = anchor[1] - h
    if y < 0:
        y = min(anchor[1], image.shape[0] - h)
    bottom = min(max(anchor[2], y + h), image.shape[0])
    for step in range(image.shape[0] // h + 1):
        yy = y + step * h
        if yy + h > bottom:
            break
        rect = (x, yy, x + w, yy + h)
        if not any(_overlaps(rect, r) for r in placed):
            return rect, th
    return (x, y, x + w, y + h), th


def _draw_label(image, text: str, anchor: Tuple[int, int, int], color, font_scale: float, placed=()) -> Tuple[int, int, int, int]:
    """Draw a filled tab with ``text`` near ``anchor`` (see :func:`_label_rect`) and
    return its rectangle."""
    (x0, y0, x1, y1), th = _label_rect(image, text, anchor, font_scale, placed)
    cv2.rectangle(image, (x0, y0), (x1, y1), color, -1)
    cv2.putText(image, text, (x0 + 1, y0 + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, _text_color(color), 1,
                cv2.LINE_AA)
    return x0, y0, x1, y1
