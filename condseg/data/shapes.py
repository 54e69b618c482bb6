"""condseg_shapes: a built-in, generated instance-segmentation dataset.

Each image is a textured, noisy background with distractor clutter and 3..15
painted shapes of 8 classes (:data:`SHAPES_CLASSES`): convex, curved, concave,
thin and holed outlines, with random rotation, aspect, size (COCO small, medium
and large) and colour, overlapping in z-order. It is small enough to train on a
laptop CPU yet a real test of an instance segmenter.

Pipeline (each step a pure function, so a video generator can reuse it by
moving ``Shape.center`` from frame to frame)::

    rng = np.random.default_rng([seed, k])          # image k depends on (seed, k) only
    scene = sample_scene(rng, height, width)        # what to draw (no pixels)
    image, instances = render_scene(scene)          # BGR uint8 + [(category_id, mask)]

Ground-truth conventions:

* Shapes are painted bottom to top (``Scene.shapes`` order). A mask holds the
  *visible* pixels only: whatever a higher shape covers is removed from the
  lower shape's mask, and so are the parts outside the image.
* A shape whose visible area is below ``max(MIN_VISIBLE_PIXELS,
  MIN_VISIBLE_FRACTION * full area)`` is dropped: it is neither annotated nor
  painted, and the masks are recomputed without it. Hence every painted shape
  pixel belongs to exactly one annotated instance, and masks are disjoint.
* Clutter (lines, scribbles, dots, blobs, texture patches) is drawn *below* all
  shapes, so it never changes a mask. Only photometric effects (pixel noise, a
  slight blur) are applied on top of the shapes; they move no mask pixel.

On disk (``generate_shapes_dataset``)::

    {root}/condseg_shapes/{split}-n{num}-{min_size}x{max_size}-seed{seed}/
        images/{k:06d}.png          # image id k + 1
        annotations.json            # COCO: compressed-RLE masks, written last

The directory is built under a temporary name and renamed into place when
complete, under a file lock, so concurrent (DDP) callers generate it once.

CLI::

    python -m condseg.data.shapes --split train --num 3000 [--root DIR] [--preview docs/shapes_preview.png]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import math
import multiprocessing
import os
import shutil
import time
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

__all__ = [
    "SHAPES_CLASSES",
    "Shape",
    "Scene",
    "sample_scene",
    "render_scene",
    "visible_shape_masks",
    "shape_polygons",
    "shapes_dataset_dir",
    "generate_shapes_dataset",
    "register_shapes_datasets",
    "draw_preview",
]

# Class names; index i has COCO category id i + 1.
SHAPES_CLASSES: List[str] = [
    "ellipse",  # convex, curved
    "triangle",  # convex, straight, sharp corners
    "star",  # concave, 5..7 points
    "crescent",  # curved and concave, thin horns
    "cross",  # concave, right angles
    "ring",  # annulus: a hole showing the background
    "arrow",  # thin shaft + head
    "heart",  # curved, concave notch
]
# One distinct RGB colour per class (MetadataCatalog thing_colors, preview overlays).
SHAPES_COLORS: List[Tuple[int, int, int]] = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
]

GENERATOR_VERSION = 2  # bump when the generated data changes: older splits on disk get regenerated
MIN_INSTANCES, MAX_INSTANCES = 3, 15  # annotated instances per image (inclusive)
MIN_VISIBLE_PIXELS = 15  # drop a shape with fewer visible pixels ...
MIN_VISIBLE_FRACTION = 0.25  # ... or less than this fraction of its full area visible
# Shape size: sqrt(full area) is log-uniform within a COCO size bucket drawn with these
# probabilities (small < 32 px, medium < 96 px, large); occlusion makes visible areas smaller.
SIZE_BUCKETS = ((8.0, 32.0, 0.38), (32.0, 96.0, 0.32), (96.0, math.inf, 0.3))  # (lo, hi, prob)
MAX_SHAPE_SIDE_FRACTION = 0.7  # largest sqrt(full area), as a fraction of the shorter image side
# cv2.imwrite PNG options: zlib level 1 with the RLE strategy and the Paeth filter was the
# fastest setting that was also among the smallest (~100 KB per image, ~3 ms to encode).
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]
_SUBPIXEL_BITS = 4  # cv2.fillPoly fractional bits: vertices are placed at 1/16 px
_DIRNAME = "condseg_shapes"

# ----------------------------------------------------------------------------- scene


@dataclasses.dataclass
class Shape:
    """One object to paint.

    Attributes:
        category_id: 1..len(SHAPES_CLASSES).
        center: (x, y) of the shape's origin in image pixels (may lie near or past a border).
        scale: half-extent (px) of the unit outline (which lies roughly in [-1, 1]^2).
        aspect: x stretch / y stretch (the unit outline is scaled by scale*sqrt(aspect)
            along its x axis and by scale/sqrt(aspect) along its y axis, before rotation).
        angle: rotation (radians) applied after the stretch; with the image y axis pointing
            down, a positive angle turns the shape clockwise on screen.
        geometry: class-specific unit-frame parameters (see :func:`_unit_outline`).
        color: BGR fill colour, 0..255.
        shading: brightness gradient across the shape: (strength in [0, 1), direction radians).
        stripes: None or (period px, direction radians, darkening in [0, 1)) texture inside.
        outline: None or (thickness px, brightness factor) border drawn inside the mask.
    """

    category_id: int
    center: Tuple[float, float]
    scale: float
    aspect: float
    angle: float
    geometry: Dict[str, float]
    color: Tuple[int, int, int]
    shading: Tuple[float, float] = (0.0, 0.0)
    stripes: Optional[Tuple[float, float, float]] = None
    outline: Optional[Tuple[int, float]] = None


@dataclasses.dataclass
class Scene:
    """Everything :func:`render_scene` needs to draw one image (no pixels, just parameters).

    Attributes:
        height, width: image size (px).
        background: dict with ``colors`` (two BGR colours of a linear gradient),
            ``direction`` (radians), ``noise_grid`` (gh x gw x 3 float array in [-1, 1]
            upsampled to low-frequency colour noise), ``noise_amplitude`` (grey levels),
            ``pattern`` (None or dict(kind="stripes"|"checker", period, angle, amplitude)).
        clutter: distractor items drawn below the shapes, each a dict with ``kind`` in
            {"line", "scribble", "dot", "blob", "patch"} and its drawing parameters.
        shapes: the objects, bottom (painted first) to top.
        pixel_noise: standard deviation (grey levels) of the Gaussian noise added last.
        blur: whether to apply a 3x3 Gaussian blur after the noise.
        noise_seed: seed of the pixel noise, so rendering is a pure function of the scene.
    """

    height: int
    width: int
    background: dict
    clutter: List[dict]
    shapes: List[Shape]
    pixel_noise: float = 0.0
    blur: bool = False
    noise_seed: int = 0


def _random_color(rng: np.random.Generator, min_sat: int = 40, min_val: int = 50) -> np.ndarray:
    """A random BGR colour (float array of 3), sampled in HSV so that hues are uniform."""
    hsv = np.array(
        [[[rng.integers(0, 180), rng.integers(min_sat, 256), rng.integers(min_val, 256)]]],
        dtype=np.uint8,
    )
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def _sample_background(rng: np.random.Generator) -> dict:
    """Gradient + low-frequency colour noise + (sometimes) stripes or a checkerboard."""
    c0 = _random_color(rng, min_sat=0, min_val=30)
    c1 = np.clip(c0 + rng.normal(0.0, 45.0, 3), 0, 255)
    gh, gw = (int(v) for v in rng.integers(2, 9, size=2))
    pattern = None
    if rng.random() < 0.45:
        pattern = dict(
            kind=str(rng.choice(["stripes", "checker"])),
            period=float(rng.uniform(6.0, 40.0)),
            angle=float(rng.uniform(0.0, math.pi)),
            amplitude=float(rng.uniform(6.0, 30.0)),
        )
    return dict(
        colors=(tuple(c0.tolist()), tuple(c1.tolist())),
        direction=float(rng.uniform(0.0, 2 * math.pi)),
        noise_grid=rng.uniform(-1.0, 1.0, size=(gh, gw, 3)).astype(np.float32),
        noise_amplitude=float(rng.uniform(0.0, 40.0)),
        pattern=pattern,
    )


def _random_walk(rng: np.random.Generator, start: np.ndarray, steps: int, step_len: float) -> list:
    """Points of a smooth random walk (an (n, 2) list of float x, y), for scribbles."""
    heading = rng.uniform(0.0, 2 * math.pi)
    points = [start]
    for _ in range(steps):
        heading += rng.normal(0.0, 0.6)
        points.append(points[-1] + step_len * np.array([math.cos(heading), math.sin(heading)]))
    return np.stack(points).tolist()


def _sample_clutter(rng: np.random.Generator, height: int, width: int) -> List[dict]:
    """Distractors that are not objects: lines, scribbles, dots, blobs, texture patches."""
    size = np.array([width, height], dtype=np.float64)
    items: List[dict] = []
    for _ in range(rng.integers(0, 7)):
        items.append(dict(kind="line", p0=(rng.uniform(0, 1, 2) * size).tolist(),
                          p1=(rng.uniform(0, 1, 2) * size).tolist(),
                          thickness=int(rng.integers(1, 4)), color=_random_color(rng).tolist()))
    for _ in range(rng.integers(0, 4)):
        items.append(dict(kind="scribble",
                          points=_random_walk(rng, rng.uniform(0, 1, 2) * size,
                                              int(rng.integers(8, 30)), float(rng.uniform(3, 10))),
                          thickness=int(rng.integers(1, 3)), color=_random_color(rng).tolist()))
    for _ in range(rng.integers(0, 16)):
        items.append(dict(kind="dot", center=(rng.uniform(0, 1, 2) * size).tolist(),
                          radius=int(rng.integers(1, 4)), color=_random_color(rng).tolist()))
    for _ in range(rng.integers(0, 4)):
        items.append(dict(kind="blob", center=(rng.uniform(0, 1, 2) * size).tolist(),
                          axes=rng.uniform(2, 7, 2).tolist(), angle=float(rng.uniform(0, 180)),
                          color=_random_color(rng).tolist()))
    for _ in range(rng.integers(0, 3)):
        items.append(dict(kind="patch", center=(rng.uniform(0, 1, 2) * size).tolist(),
                          size=(rng.uniform(0.1, 0.35, 2) * size).tolist(),
                          angle=float(rng.uniform(0, 180)), period=float(rng.uniform(3, 10)),
                          alpha=float(rng.uniform(0.15, 0.4)), color=_random_color(rng).tolist()))
    return items


def _sample_geometry(rng: np.random.Generator, name: str) -> Dict[str, float]:
    """Class-specific unit-frame parameters (see :func:`_unit_outline` for their meaning)."""
    if name == "triangle":
        jitter = rng.uniform(-0.45, 0.45, 3)
        return {f"a{i}": float(2 * math.pi * i / 3 + jitter[i]) for i in range(3)}
    if name == "star":
        return dict(points=float(rng.integers(5, 8)), inner=float(rng.uniform(0.35, 0.6)))
    if name == "crescent":
        return dict(offset=float(rng.uniform(0.35, 0.7)), cut=float(rng.uniform(0.75, 1.0)))
    if name == "cross":
        return dict(half_width=float(rng.uniform(0.18, 0.36)))
    if name == "ring":
        return dict(inner=float(rng.uniform(0.45, 0.72)), shift=float(rng.uniform(0.0, 0.12)))
    if name == "arrow":
        return dict(shaft=float(rng.uniform(0.07, 0.16)), head=float(rng.uniform(0.35, 0.55)),
                    head_length=float(rng.uniform(0.5, 0.8)))
    return {}


def _sample_side(rng: np.random.Generator, max_side: float) -> float:
    """sqrt(full area) of a new shape (px): a size bucket, then log-uniform inside it
    (buckets are shrunk to fit under ``max_side`` for small images)."""
    probs = np.array([p for _, _, p in SIZE_BUCKETS])
    lo, hi, _ = SIZE_BUCKETS[int(rng.choice(len(SIZE_BUCKETS), p=probs / probs.sum()))]
    hi = max(min(hi, max_side), SIZE_BUCKETS[0][0] * 1.5)
    lo = min(lo, hi / 1.5)
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _sample_shape(rng: np.random.Generator, height: int, width: int,
                  avoid_color: np.ndarray) -> Shape:
    """A random shape: uniform class, size from :func:`_sample_side`, centre in the image
    (so large shapes are often cut by a border), random aspect, angle and appearance."""
    cls = int(rng.integers(len(SHAPES_CLASSES)))
    name = SHAPES_CLASSES[cls]
    geometry = _sample_geometry(rng, name)
    side = _sample_side(rng, MAX_SHAPE_SIDE_FRACTION * min(height, width))
    scale = side / math.sqrt(_unit_area(name, geometry))
    # Colour: retry a few times for one that stands out from the mean background colour.
    for _ in range(8):
        color = _random_color(rng)
        if np.linalg.norm(color - avoid_color) > 60:
            break
    shading = (float(rng.uniform(0.0, 0.35)), float(rng.uniform(0.0, 2 * math.pi)))
    stripes = None
    if rng.random() < 0.25:
        stripes = (float(rng.uniform(3.0, 9.0)), float(rng.uniform(0.0, math.pi)),
                   float(rng.uniform(0.15, 0.4)))
    outline = None
    if rng.random() < 0.3:
        outline = (int(rng.integers(1, 3)), float(rng.choice([0.55, 1.5])))
    return Shape(
        category_id=cls + 1,
        center=(float(rng.uniform(0.03, 0.97) * width), float(rng.uniform(0.03, 0.97) * height)),
        scale=float(scale),
        aspect=float(math.exp(rng.uniform(math.log(0.6), math.log(1.6)))),
        angle=float(rng.uniform(0.0, 2 * math.pi)),
        geometry=geometry,
        color=tuple(int(c) for c in color),
        shading=shading,
        stripes=stripes,
        outline=outline,
    )


def sample_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Sample a random scene of ``height`` x ``width`` pixels (no rendering).

    Draws 3..15 shapes; the z-order is mostly large-below-small, with random swaps
    (sorted by -log(area) plus unit Gaussian noise). Rendering may drop hidden shapes.
    The result depends only on the state of ``rng``.
    """
    background = _sample_background(rng)
    clutter = _sample_clutter(rng, height, width)
    mean_bg = (np.array(background["colors"][0]) + np.array(background["colors"][1])) / 2
    num = int(rng.integers(MIN_INSTANCES, MAX_INSTANCES + 1))
    shapes = [_sample_shape(rng, height, width, mean_bg) for _ in range(num)]
    depth = [-math.log(_shape_area(s)) + rng.normal() for s in shapes]
    shapes = [shapes[i] for i in np.argsort(depth, kind="stable")]
    pixel_noise = float(rng.uniform(1.0, 5.0)) if rng.random() < 0.4 else 0.0
    return Scene(
        height=height,
        width=width,
        background=background,
        clutter=clutter,
        shapes=shapes,
        pixel_noise=pixel_noise,
        blur=bool(rng.random() < 0.25),
        noise_seed=int(rng.integers(2**31)),
    )


# ----------------------------------------------------------------------------- geometry


def _circle(n: int = 72, radius: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    """(n, 2) points of a circle in the unit frame."""
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def _unit_outline(name: str, g: Dict[str, float]) -> List[Tuple[np.ndarray, int]]:
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


def _unit_area(name: str, g: Dict[str, float]) -> float:
    """Area of the unit outline of :func:`_unit_outline` (closed forms; the stretch by
    ``aspect`` keeps areas, so a shape covers about ``_unit_area * scale**2`` px)."""
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


def _shape_area(shape: Shape) -> float:
    """Full (unoccluded, unclipped) area of a shape in px, from its closed form."""
    return _unit_area(SHAPES_CLASSES[shape.category_id - 1], shape.geometry) * shape.scale**2


def shape_polygons(shape: Shape) -> List[Tuple[np.ndarray, int]]:
    """The shape's polygons in image pixels: a list of ((n, 2) float x, y points, value 1|0)."""
    name = SHAPES_CLASSES[shape.category_id - 1]
    sx = shape.scale * math.sqrt(shape.aspect)
    sy = shape.scale / math.sqrt(shape.aspect)
    c, s = math.cos(shape.angle), math.sin(shape.angle)
    transform = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    center = np.asarray(shape.center, dtype=np.float64)
    return [(p @ transform.T + center, v) for p, v in _unit_outline(name, shape.geometry)]


def _rasterize(polys: List[Tuple[np.ndarray, int]]) -> Tuple[int, int, np.ndarray]:
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


# ----------------------------------------------------------------------------- rendering


def _plane_wave(height: int, width: int, angle: float, period: float) -> np.ndarray:
    """(height, width) float32 sin(2*pi*(x cos(angle) + y sin(angle)) / period), computed
    as a sum of two outer products (sin(a + b) expanded) instead of H*W sines."""
    k = 2 * math.pi / period
    ax = (np.arange(width, dtype=np.float32) * (k * math.cos(angle)))[None, :]
    by = (np.arange(height, dtype=np.float32) * (k * math.sin(angle)))[:, None]
    return np.sin(by) * np.cos(ax) + np.cos(by) * np.sin(ax)


def _render_background(scene: Scene) -> np.ndarray:
    """(H, W, 3) float32 BGR background: gradient + low-frequency noise + pattern.

    The smooth part (gradient + noise) is computed at 1/8 resolution and upsampled
    bilinearly: it only varies over tens of pixels.
    """
    h, w, bg = scene.height, scene.width, scene.background
    lh, lw = h // 8 + 2, w // 8 + 2
    d = bg["direction"]
    proj = (np.arange(lw, dtype=np.float32)[None, :] * math.cos(d)
            + np.arange(lh, dtype=np.float32)[:, None] * math.sin(d))
    t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-3)
    c0, c1 = (np.asarray(c, np.float32) for c in bg["colors"])
    low = c0 + t[..., None] * (c1 - c0)
    low += bg["noise_amplitude"] * cv2.resize(bg["noise_grid"], (lw, lh), interpolation=cv2.INTER_CUBIC)
    image = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
    pattern = bg["pattern"]
    if pattern is not None:
        # Period 2 * period: stripes and squares are `period` px wide.
        a, period = pattern["angle"], 2 * pattern["period"]
        wave = _plane_wave(h, w, a, period)
        if pattern["kind"] == "checker":
            wave = np.sign(wave * _plane_wave(h, w, a + math.pi / 2, period))
        image += (pattern["amplitude"] * wave)[..., None]
    return image


def _draw_clutter(image: np.ndarray, clutter: Sequence[dict]) -> None:
    """Draw the distractors onto the float32 BGR image, in place."""
    for item in clutter:
        kind, color = item["kind"], tuple(item["color"])
        if kind == "line":
            p0 = tuple(int(round(v)) for v in item["p0"])
            p1 = tuple(int(round(v)) for v in item["p1"])
            cv2.line(image, p0, p1, color, item["thickness"], cv2.LINE_AA)
        elif kind == "scribble":
            pts = np.round(np.asarray(item["points"])).astype(np.int32)
            cv2.polylines(image, [pts], False, color, item["thickness"], cv2.LINE_AA)
        elif kind == "dot":
            center = tuple(int(round(v)) for v in item["center"])
            cv2.circle(image, center, item["radius"], color, -1, cv2.LINE_AA)
        elif kind == "blob":
            center = tuple(int(round(v)) for v in item["center"])
            axes = tuple(int(round(v)) for v in item["axes"])
            cv2.ellipse(image, center, axes, item["angle"], 0, 360, color, -1, cv2.LINE_AA)
        elif kind == "patch":
            _draw_patch(image, item)
        else:
            raise ValueError(f"Unknown clutter kind {kind!r}")


def _draw_patch(image: np.ndarray, item: dict) -> None:
    """Blend a rotated rectangle of fine stripes into the image (a texture distractor)."""
    box = cv2.boxPoints((tuple(item["center"]), tuple(item["size"]), item["angle"]))
    x0, y0 = np.floor(box.min(axis=0)).astype(int)
    x1, y1 = np.ceil(box.max(axis=0)).astype(int) + 1
    region = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(region, [np.round(box - (x0, y0)).astype(np.int32)], 1)
    ys, xs = np.nonzero(region)
    ys, xs = ys + y0, xs + x0
    inside = (ys >= 0) & (ys < image.shape[0]) & (xs >= 0) & (xs < image.shape[1])
    ys, xs = ys[inside], xs[inside]
    a = math.radians(item["angle"])
    stripe = np.sin((xs * math.cos(a) + ys * math.sin(a)) * (2 * math.pi / item["period"])) > 0
    alpha = item["alpha"] * stripe[:, None]
    image[ys, xs] = (1 - alpha) * image[ys, xs] + alpha * np.asarray(item["color"], np.float32)


def _visible_owner(scene: Scene, rasters: List[Tuple[int, int, np.ndarray]],
                   active: Sequence[int]) -> np.ndarray:
    """(H, W) int16 map of the top-most active shape index at each pixel (-1: none)."""
    owner = np.full((scene.height, scene.width), -1, np.int16)
    for i in active:
        x0, y0, mask = rasters[i]
        sl_img, sl_mask = _clip_box(x0, y0, mask.shape, scene.height, scene.width)
        if sl_img is not None:
            owner[sl_img][mask[sl_mask]] = i
    return owner


def _clip_box(x0: int, y0: int, shape_hw: Tuple[int, int], height: int, width: int):
    """Slices (image, local) of the intersection of a box at (x0, y0) with the image,
    or (None, None) when they do not intersect."""
    h, w = shape_hw
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + w, width), min(y0 + h, height)
    if ix0 >= ix1 or iy0 >= iy1:
        return None, None
    return (
        (slice(iy0, iy1), slice(ix0, ix1)),
        (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0)),
    )


def _layout(scene: Scene):
    """Rasters of all shapes and the visible mask of each (None if dropped).

    Returns (rasters, masks): ``rasters[i]`` is (x0, y0, full bool mask) from
    :func:`_rasterize`; ``masks[i]`` is an (H, W) bool array or None.
    """
    rasters = [_rasterize(shape_polygons(s)) for s in scene.shapes]
    active = list(range(len(scene.shapes)))
    owner = _visible_owner(scene, rasters, active)
    for _ in range(2):  # dropping only uncovers the others: two passes settle it
        counts = np.bincount(owner.ravel() + 1, minlength=len(scene.shapes) + 1)[1:]
        kept = [
            i for i in active
            if counts[i] >= max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * rasters[i][2].sum())
        ]
        if kept == active:
            break
        active = kept
        owner = _visible_owner(scene, rasters, active)
    masks: List[Optional[np.ndarray]] = [None] * len(scene.shapes)
    for i in active:
        x0, y0, full = rasters[i]
        sl_img, _ = _clip_box(x0, y0, full.shape, scene.height, scene.width)
        masks[i] = np.zeros((scene.height, scene.width), bool)
        masks[i][sl_img] = owner[sl_img] == i
    return rasters, masks


def visible_shape_masks(scene: Scene) -> List[Optional[np.ndarray]]:
    """Per shape of ``scene`` (same order), its visible (H, W) bool mask, or None if dropped.

    A shape is dropped when too little of it is visible (see module docstring); the
    masks of the others are computed as if the dropped shapes were not there.
    """
    return _layout(scene)[1]


def _paint_shape(image: np.ndarray, shape: Shape, raster: Tuple[int, int, np.ndarray],
                 visible: np.ndarray) -> None:
    """Paint ``shape`` onto the float32 (H, W, 3) image at its ``visible`` (H, W) bool pixels.

    Appearance: the shape's colour times a brightness that varies linearly across the
    shape (shading), optional stripes, and an optional outline: the border of the
    full (unclipped, unoccluded) ``raster`` from :func:`_rasterize`, drawn inside it.
    """
    fx0, fy0, full = raster
    sl_img, sl_full = _clip_box(fx0, fy0, full.shape, *visible.shape)
    ys, xs = np.nonzero(visible[sl_img])  # visible pixels, relative to the clipped box
    if len(ys) == 0:
        return
    gy = (ys + sl_img[0].start).astype(np.float32)  # image coordinates
    gx = (xs + sl_img[1].start).astype(np.float32)
    cx, cy = shape.center
    strength, direction = shape.shading
    proj = ((gx - cx) * math.cos(direction) + (gy - cy) * math.sin(direction)) / max(shape.scale, 1.0)
    brightness = 1.0 + strength * np.clip(proj, -1.0, 1.0)
    if shape.stripes is not None:
        period, angle, dark = shape.stripes
        phase = (gx * math.cos(angle) + gy * math.sin(angle)) * (2 * math.pi / period)
        brightness *= 1.0 - dark * (np.sin(phase) > 0)
    if shape.outline is not None:
        thickness, factor = shape.outline
        inner = cv2.erode(full.astype(np.uint8), np.ones((3, 3), np.uint8),
                          iterations=thickness, borderValue=0).astype(bool)
        border = (full & ~inner)[sl_full]
        brightness[border[ys, xs]] *= factor
    region = image[sl_img]
    region[ys, xs] = brightness[:, None] * np.asarray(shape.color, np.float32)


def render_scene(scene: Scene) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray]]]:
    """Draw a scene.

    Returns:
        image: (H, W, 3) uint8 BGR.
        instances: [(category_id, (H, W) bool visible mask)] of the kept shapes, bottom
            to top; masks are non-empty and pairwise disjoint.
    """
    rasters, masks = _layout(scene)
    image = _render_background(scene)
    _draw_clutter(image, scene.clutter)
    instances = []
    for shape, raster, mask in zip(scene.shapes, rasters, masks):
        if mask is not None:
            _paint_shape(image, shape, raster, mask)
            instances.append((shape.category_id, mask))
    if scene.pixel_noise > 0:
        noise = np.random.default_rng(scene.noise_seed).standard_normal(image.shape, np.float32)
        image += scene.pixel_noise * noise
    if scene.blur:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    np.clip(image, 0, 255, out=image)
    return np.rint(image, out=image).astype(np.uint8), instances


# ----------------------------------------------------------------------------- dataset files


def shapes_dataset_dir(split: str, num_images: int, min_size: int, max_size: int, seed: int,
                       root: Optional[str] = None) -> str:
    """Directory of one generated split: ``{root}/condseg_shapes/{split}-n{num}-{min}x{max}-seed{seed}``.

    ``root=None`` means ``$DETECTRON2_DATASETS`` or else ``datasets`` (relative to the
    current directory), like detectron2's built-in datasets.
    """
    if root is None:
        root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    name = f"{split}-n{int(num_images)}-{int(min_size)}x{int(max_size)}-seed{int(seed)}"
    return os.path.join(root, _DIRNAME, name)


def _scene_for_image(seed: int, index: int, min_size: int, max_size: int):
    """Image ``index`` of a split with ``seed``: depends on (seed, index) only.

    Returns (image BGR uint8, instances) of the first sampled scene that keeps at
    least MIN_INSTANCES instances after occlusion (resampled with the same rng).
    """
    rng = np.random.default_rng([seed, index])
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    for _ in range(100):
        image, instances = render_scene(sample_scene(rng, height, width))
        if len(instances) >= MIN_INSTANCES:
            break
    return image, instances


def _mask_annotation(category_id: int, mask: np.ndarray) -> dict:
    """COCO annotation (without ids) of a non-empty (H, W) bool mask: compressed RLE,
    pixel-count area and the tight XYWH box of the mask."""
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    return dict(
        category_id=int(category_id),
        segmentation=dict(size=[int(v) for v in rle["size"]], counts=rle["counts"].decode("ascii")),
        area=int(mask_util.area(rle)),
        bbox=[int(v) for v in mask_util.toBbox(rle)],  # integral for a pixel mask
        iscrowd=0,
    )


def _make_image(job: Tuple[int, int, int, int, str]) -> Tuple[dict, List[dict]]:
    """Worker: render image ``index`` and write its PNG into ``image_dir``.

    ``job`` is (index, seed, min_size, max_size, image_dir). Returns the COCO image
    entry and its annotations, without annotation ids.
    """
    index, seed, min_size, max_size, image_dir = job
    image, instances = _scene_for_image(seed, index, min_size, max_size)
    file_name = f"{index:06d}.png"
    if not cv2.imwrite(os.path.join(image_dir, file_name), image, PNG_PARAMS):
        raise OSError(f"Could not write {os.path.join(image_dir, file_name)}")
    height, width = image.shape[:2]
    info = dict(id=index + 1, file_name=file_name, height=height, width=width, license=1)
    return info, [_mask_annotation(c, m) for c, m in instances]


def _worker_init() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core


def _pool_context():
    """A multiprocessing context whose workers start clean.

    Not "fork": a child forked after the parent used OpenCV's thread pool can deadlock
    inside OpenCV (seen with cv2.setNumThreads), and forking a multi-threaded trainer is
    unsafe anyway. "forkserver" with this module preloaded pays the import (torch,
    detectron2) once per process; "spawn" where there is no forkserver (Windows).
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["condseg.data.shapes"])  # no effect once the server runs
        return ctx
    return multiprocessing.get_context("spawn")


def _write_dataset(out_dir: str, split: str, num_images: int, min_size: int, max_size: int,
                   seed: int, num_workers: int) -> None:
    """Render all images into ``out_dir/images`` and then write ``out_dir/annotations.json``."""
    from tqdm import tqdm

    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    jobs = [(k, seed, min_size, max_size, image_dir) for k in range(num_images)]
    images, annotations = [], []
    progress = dict(total=num_images, desc=f"condseg_shapes {split}", unit="img", smoothing=0.05)
    with contextlib.ExitStack() as stack:
        if num_workers > 1 and not multiprocessing.current_process().daemon:  # daemons can't fork
            pool = stack.enter_context(_pool_context().Pool(num_workers, initializer=_worker_init))
            results = pool.imap(_make_image, jobs, chunksize=8)
        else:
            results = map(_make_image, jobs)
        for info, anns in tqdm(results, **progress):  # in image order, whatever the workers
            images.append(info)
            for ann in anns:
                annotations.append(dict(id=len(annotations) + 1, image_id=info["id"], **ann))
    coco = dict(
        info=dict(
            description=f"condseg_shapes {split}: generated instance segmentation of "
                        f"{len(SHAPES_CLASSES)} shape classes (condseg.data.shapes)",
            version=str(GENERATOR_VERSION),
            year=2024,
            contributor="condseg",
            url="",
            date_created="",
            split=split, num_images=num_images, min_size=min_size, max_size=max_size, seed=seed,
        ),
        licenses=[dict(id=1, name="CC0 1.0 (generated data)",
                       url="https://creativecommons.org/publicdomain/zero/1.0/")],
        categories=[dict(id=i + 1, name=n, supercategory="shape")
                    for i, n in enumerate(SHAPES_CLASSES)],
        images=images,
        annotations=annotations,
    )
    with open(os.path.join(out_dir, "annotations.json"), "w") as f:
        json.dump(coco, f, separators=(",", ":"))


@contextlib.contextmanager
def _file_lock(path: str):
    """Exclusive ``flock`` on ``path`` (created if missing) while in the block.

    Without ``fcntl`` (Windows) this does not lock: a single process is assumed.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _is_current(json_file: str) -> bool:
    """Whether ``json_file`` exists and was written by this GENERATOR_VERSION."""
    if not os.path.isfile(json_file):
        return False
    try:
        with open(json_file) as f:
            return json.load(f)["info"]["version"] == str(GENERATOR_VERSION)
    except (ValueError, KeyError, TypeError):
        return False


def generate_shapes_dataset(split: str, num_images: int, min_size: int = 256, max_size: int = 384,
                            seed: int = 0, root: Optional[str] = None, num_workers: int = 2) -> str:
    """Generate one split unless it exists; return the path of its ``annotations.json``.

    An existing split is reused as is, unless its json was written by another
    ``GENERATOR_VERSION`` (then it is regenerated in place).

    Images have sides uniform in [min_size, max_size]; image k depends only on
    (seed, k), so the output does not depend on ``num_workers``. The split is built
    in a temporary sibling directory and renamed into place when complete, under an
    exclusive lock, so concurrent callers (DDP ranks) generate it once and a crash
    leaves no complete-looking directory behind.
    """
    if not 1 <= min_size <= max_size:
        raise ValueError(f"Need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    if num_images < 1 or seed < 0:
        raise ValueError(f"Need num_images >= 1 and seed >= 0, got {num_images}, {seed}")
    final_dir = shapes_dataset_dir(split, num_images, min_size, max_size, seed, root)
    json_file = os.path.join(final_dir, "annotations.json")
    if _is_current(json_file):
        return json_file
    parent, name = os.path.split(final_dir)
    os.makedirs(parent, exist_ok=True)
    with _file_lock(os.path.join(parent, f".{name}.lock")):
        if _is_current(json_file):  # another process made it while we waited
            return json_file
        for stale in glob.glob(os.path.join(parent, f".{name}.tmp-*")):  # crashed earlier runs
            shutil.rmtree(stale, ignore_errors=True)
        tmp_dir = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
        try:
            os.mkdir(tmp_dir)
            _write_dataset(tmp_dir, split, num_images, min_size, max_size, seed, num_workers)
            if os.path.exists(final_dir):  # incomplete, or made by another generator version
                shutil.rmtree(final_dir)
            os.replace(tmp_dir, final_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    return json_file


# ----------------------------------------------------------------------------- registration


def _register_split(name: str, split: str, num_images: int, min_size: int, max_size: int,
                    seed: int, root: Optional[str]) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json

    final_dir = shapes_dataset_dir(split, num_images, min_size, max_size, seed, root)
    image_root = os.path.join(final_dir, "images")

    def load() -> List[dict]:
        json_file = generate_shapes_dataset(split, num_images, min_size, max_size, seed, root)
        return load_coco_json(json_file, image_root, name)

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        thing_classes=list(SHAPES_CLASSES),
        thing_colors=[tuple(c) for c in SHAPES_COLORS],
        json_file=os.path.join(final_dir, "annotations.json"),
        image_root=image_root,
        evaluator_type="coco",
        generated_on_demand=True,  # the files appear at first load (input checks skip them)
    )


def register_shapes_datasets(num_train: int = 3000, num_val: int = 200, min_size: int = 256,
                             max_size: int = 384, seed: int = 0, root: Optional[str] = None) -> None:
    """Register ``condseg_shapes_train`` (seed) and ``condseg_shapes_val`` (seed + 1).

    Lazy: nothing is generated until ``DatasetCatalog.get(name)`` is first called, so
    the metadata's ``json_file`` exists only from then on. Registering again (other
    sizes) replaces the previous registration.
    """
    _register_split("condseg_shapes_train", "train", num_train, min_size, max_size, seed, root)
    _register_split("condseg_shapes_val", "val", num_val, min_size, max_size, seed + 1, root)


# ----------------------------------------------------------------------------- preview + CLI


def draw_preview(json_file: str, num: int = 8, columns: int = 4, cell: int = 240) -> np.ndarray:
    """A BGR grid of the first ``num`` images of a generated split with their masks:
    class-coloured overlay, white contours and class names. Each cell is ``cell`` px."""
    with open(json_file) as f:
        coco = json.load(f)
    image_root = os.path.join(os.path.dirname(json_file), "images")
    by_image: Dict[int, List[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    cells = []
    for info in coco["images"][:num]:
        image = cv2.imread(os.path.join(image_root, info["file_name"]))
        cells.append(_draw_instances(image, by_image.get(info["id"], []), cell))
    while len(cells) % columns:
        cells.append(np.zeros_like(cells[0]))
    rows = [np.concatenate(cells[i:i + columns], axis=1) for i in range(0, len(cells), columns)]
    return np.concatenate(rows, axis=0)


def _draw_instances(image: np.ndarray, anns: List[dict], cell: int) -> np.ndarray:
    """The image scaled to fit a ``cell`` square (black padding) with its instances drawn."""
    h, w = image.shape[:2]
    k = cell / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    labels = []
    for ann in anns:
        mask = mask_util.decode(ann["segmentation"])
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST).astype(bool)
        rgb = SHAPES_COLORS[ann["category_id"] - 1]
        out[mask] = 0.6 * out[mask] + 0.4 * np.array(rgb[::-1], np.float32)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
        x, y = ann["bbox"][0] * k, ann["bbox"][1] * k
        labels.append((SHAPES_CLASSES[ann["category_id"] - 1], (int(x), max(int(y) - 2, 8))))
    out = np.clip(out, 0, 255).astype(np.uint8)
    for text, org in labels:  # on top of every mask
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1, cv2.LINE_AA)
    canvas = np.zeros((cell, cell, 3), np.uint8)
    canvas[:out.shape[0], :out.shape[1]] = out
    return canvas


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(
        description="Generate a condseg_shapes split (the same files register_shapes_datasets uses).")
    parser.add_argument("--split", default="train", help="split name (train or val)")
    parser.add_argument("--num", type=int, default=None,
                        help="number of images (default: 3000 for train, 200 otherwise)")
    parser.add_argument("--min-size", type=int, default=256, help="smallest image side (px)")
    parser.add_argument("--max-size", type=int, default=384, help="largest image side (px)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed, as DATASETS.SHAPES.SEED: train uses it, other splits seed + 1")
    parser.add_argument("--root", default=None,
                        help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--preview", default=None, help="also write a preview grid PNG here")
    args = parser.parse_args(argv)
    num = args.num if args.num is not None else (3000 if args.split == "train" else 200)
    seed = args.seed if args.split == "train" else args.seed + 1
    start = time.perf_counter()
    json_file = generate_shapes_dataset(args.split, num, args.min_size, args.max_size, seed,
                                        args.root, args.workers)
    print(f"{json_file} ({time.perf_counter() - start:.1f} s)")
    if args.preview:
        os.makedirs(os.path.dirname(args.preview) or ".", exist_ok=True)
        cv2.imwrite(args.preview, draw_preview(json_file), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"preview: {args.preview}")
    return json_file


if __name__ == "__main__":
    # Run the package's copy of this module (which `import condseg` has loaded already),
    # so that pool workers unpickle condseg.data.shapes functions, not __main__ ones.
    from condseg.data.shapes import main as _package_main

    _package_main()
