"""Drawing a :class:`~.scene.Scene`: background, clutter below the shapes, the shapes in
z-order with their visible masks, then pixel noise and blur (which move no mask pixel)."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .geometry import rasterize, shape_polygons
from .scene import Scene, Shape

__all__ = ["MIN_VISIBLE_PIXELS", "MIN_VISIBLE_FRACTION", "visible_shape_masks", "render_scene"]

MIN_VISIBLE_PIXELS = 15  # drop a shape with fewer visible pixels ...
MIN_VISIBLE_FRACTION = 0.25  # ... or less than this fraction of its full area visible


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
    :func:`rasterize`; ``masks[i]`` is an (H, W) bool array or None.
    """
    rasters = [rasterize(shape_polygons(s)) for s in scene.shapes]
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

    A shape is dropped when too little of it is visible (see the package docstring); the
    masks of the others are computed as if the dropped shapes were not there.
    """
    return _layout(scene)[1]


def _paint_shape(image: np.ndarray, shape: Shape, raster: Tuple[int, int, np.ndarray],
                 visible: np.ndarray) -> None:
    """Paint ``shape`` onto the float32 (H, W, 3) image at its ``visible`` (H, W) bool pixels.

    Appearance: the shape's colour times a brightness that varies linearly across the
    shape (shading), optional stripes, and an optional outline: the border of the
    full (unclipped, unoccluded) ``raster`` from :func:`rasterize`, drawn inside it.
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
