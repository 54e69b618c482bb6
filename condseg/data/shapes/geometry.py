"""Outlines of the shape classes: unit-frame polygons, their closed-form areas, and the
rasterisation that both the masks and the painted pixels come from."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, List, Tuple

import cv2
import numpy as np

from .classes import SHAPES_CLASSES

if TYPE_CHECKING:
    from .scene import Shape

__all__ = ["unit_outline", "unit_area", "shape_area", "shape_polygons", "rasterize"]

_SUBPIXEL_BITS = 4  # cv2.fillPoly fractional bits: vertices are placed at 1/16 px


def _circle(n: int = 72, radius: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    """(n, 2) points of a circle in the unit frame."""
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def unit_outline(name: str, g: Dict[str, float]) -> List[Tuple[np.ndarray, int]]:
    """The shape in its unit frame (roughly [-1, 1]^2), as polygons to fill in order.

    Returns a list of ((n, 2) float points, value): value 1 adds the polygon to the
    shape, value 0 cuts it out (the ring's hole, the crescent's bite).
    """
    if name == "ellipse":
        return [(_circle(), 1)]
    if name == "triangle":
        a = np.array([g["a0"], g["a1"], g["a2"]])
        return [(np.stack([np.cos(a), np.sin(a)], axis=1), 1)]
    if name == "star":
        n = int(g["points"])
        t = np.arange(2 * n) * math.pi / n - math.pi / 2
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, g["inner"])
        return [(np.stack([r * np.cos(t), r * np.sin(t)], axis=1), 1)]
    if name == "crescent":
        return [(_circle(), 1), (_circle(radius=g["cut"], cx=g["offset"]), 0)]
    if name == "cross":
        w = g["half_width"]
        pts = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1),
               (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)]
        return [(np.array(pts, dtype=np.float64), 1)]
    if name == "ring":
        return [(_circle(), 1), (_circle(radius=g["inner"], cx=g["shift"]), 0)]
    if name == "arrow":
        s, h, hl = g["shaft"], g["head"], g["head_length"]
        x = 1.0 - hl
        pts = [(-1, -s), (x, -s), (x, -h), (1, 0), (x, h), (x, s), (-1, s)]
        return [(np.array(pts, dtype=np.float64), 1)]
    if name == "heart":
        t = np.linspace(0.0, 2 * math.pi, 96, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(np.stack([x, y + 2.5], axis=1) / 16.5, 1)]
    raise ValueError(f"Unknown shape class {name!r}")


def _lens_area(r1: float, r2: float, d: float) -> float:
    """Area of the intersection of two discs of radii r1, r2 whose centres are d apart."""
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return math.pi * min(r1, r2) ** 2
    a1 = r1**2 * math.acos((d**2 + r1**2 - r2**2) / (2 * d * r1))
    a2 = r2**2 * math.acos((d**2 + r2**2 - r1**2) / (2 * d * r2))
    return a1 + a2 - 0.5 * math.sqrt((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))


def unit_area(name: str, g: Dict[str, float]) -> float:
    """Area of the unit outline of :func:`unit_outline` (closed forms; the stretch by
    ``aspect`` keeps areas, so a shape covers about ``unit_area * scale**2`` px)."""
    if name == "ellipse":
        return math.pi
    if name == "triangle":  # three points on the unit circle
        a0, a1, a2 = g["a0"], g["a1"], g["a2"]
        return 0.5 * abs(math.sin(a1 - a0) + math.sin(a2 - a1) + math.sin(a0 - a2))
    if name == "star":  # 2n triangles between the centre and consecutive tips/notches
        n = g["points"]
        return n * g["inner"] * math.sin(math.pi / n)
    if name == "crescent":
        return math.pi - _lens_area(1.0, g["cut"], g["offset"])
    if name == "cross":
        w = g["half_width"]
        return 8 * w - 4 * w * w
    if name == "ring":  # the hole lies inside the disc (inner + shift < 1)
        return math.pi * (1 - g["inner"] ** 2)
    if name == "arrow":
        return (2 - g["head_length"]) * 2 * g["shaft"] + g["head"] * g["head_length"]
    if name == "heart":  # the classic heart curve encloses 180 pi (before the 1/16.5 scaling)
        return 180 * math.pi / 16.5**2
    raise ValueError(f"Unknown shape class {name!r}")


def shape_area(shape: Shape) -> float:
    """Full (unoccluded, unclipped) area of a shape in px, from its closed form."""
    return unit_area(SHAPES_CLASSES[shape.category_id - 1], shape.geometry) * shape.scale**2


def shape_polygons(shape: Shape) -> List[Tuple[np.ndarray, int]]:
    """The shape's polygons in image pixels: a list of ((n, 2) float x, y points, value 1|0)."""
    name = SHAPES_CLASSES[shape.category_id - 1]
    sx = shape.scale * math.sqrt(shape.aspect)
    sy = shape.scale / math.sqrt(shape.aspect)
    c, s = math.cos(shape.angle), math.sin(shape.angle)
    transform = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    center = np.asarray(shape.center, dtype=np.float64)
    return [(p @ transform.T + center, v) for p, v in unit_outline(name, shape.geometry)]


def rasterize(polys: List[Tuple[np.ndarray, int]]) -> Tuple[int, int, np.ndarray]:
    """Rasterise a polygon program on its own bounding box (not clipped to any image).

    Returns (x0, y0, mask): ``mask`` is a bool (h, w) array whose pixel (i, j) is
    image pixel (x0 + j, y0 + i). Vertices are placed at 1/16 px; cv2 fills every
    pixel the outline touches, so a mask is about half a pixel larger all round than
    the ideal outline (a few % of the area; thin parts never vanish). The image is
    painted from the same raster, so image and mask agree exactly.
    """
    positive = np.concatenate([p for p, v in polys if v])
    x0, y0 = np.floor(positive.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(positive.max(axis=0)).astype(int) + 2
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    one = 1 << _SUBPIXEL_BITS
    for p, v in polys:
        pts = np.round((p - (x0, y0)) * one).astype(np.int32)
        cv2.fillPoly(canvas, [pts], int(v), cv2.LINE_8, _SUBPIXEL_BITS)
    return int(x0), int(y0), canvas.astype(bool)
