"""What to draw: :class:`Shape` and :class:`Scene` (parameters, no pixels) and
:func:`sample_scene`, whose result depends only on the state of its random generator."""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from .classes import SHAPES_CLASSES
from .geometry import shape_area, unit_area

__all__ = ["MIN_INSTANCES", "MAX_INSTANCES", "Shape", "Scene", "sample_scene"]

MIN_INSTANCES, MAX_INSTANCES = 3, 15  # annotated instances per image (inclusive)
# Shape size: sqrt(full area) is log-uniform within a COCO size bucket drawn with these
# probabilities (small < 32 px, medium < 96 px, large); occlusion makes visible areas smaller.
SIZE_BUCKETS = ((8.0, 32.0, 0.38), (32.0, 96.0, 0.32), (96.0, math.inf, 0.3))  # (lo, hi, prob)
MAX_SHAPE_SIDE_FRACTION = 0.7  # largest sqrt(full area), as a fraction of the shorter image side


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
        geometry: class-specific unit-frame parameters (see :func:`.geometry.unit_outline`).
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
    """Class-specific unit-frame parameters (see :func:`.geometry.unit_outline` for their meaning)."""
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
    scale = side / math.sqrt(unit_area(name, geometry))
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
    depth = [-math.log(shape_area(s)) + rng.normal() for s in shapes]
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
