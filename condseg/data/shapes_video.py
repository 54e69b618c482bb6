"""Videos of the built-in shapes moving: for the demo and its tests, no download.

One scene of :mod:`condseg.data.shapes` (same classes, backgrounds and clutter as the
dataset the quickstart models learn) whose shapes drift and turn, bouncing off the
borders; every frame is rendered from scratch, so occlusions and masks stay exact.

    python -m condseg.data.shapes_video output/shapes.mp4 --frames 90 --size 640x480 --fps 15
"""
import argparse
import dataclasses
import math
import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from condseg.data.shapes import MIN_INSTANCES, Scene, render_scene, sample_scene

__all__ = ["moving_scenes", "write_shapes_video"]


def moving_scenes(num_frames: int, width: int, height: int, seed: int = 0,
                  max_speed: float = 0.012) -> List[Scene]:
    """``num_frames`` scenes of the same shapes in motion.

    Each shape moves at a constant velocity of up to ``max_speed`` x the image diagonal
    per frame (reflected at the borders) and turns by up to 2 degrees per frame; the
    pixel noise changes every frame, the background and clutter do not.
    """
    rng = np.random.default_rng([seed, 7])
    for _ in range(100):
        scene = sample_scene(rng, height, width)
        if len(render_scene(scene)[1]) >= MIN_INSTANCES:
            break
    diagonal = math.hypot(width, height)
    n = len(scene.shapes)
    speed = rng.uniform(0.3, 1.0, n) * max_speed * diagonal
    heading = rng.uniform(0, 2 * math.pi, n)
    velocity = np.stack([speed * np.cos(heading), speed * np.sin(heading)], axis=1)
    spin = np.radians(rng.uniform(-2.0, 2.0, n))
    centers = np.array([s.center for s in scene.shapes], np.float64)
    angles = np.array([s.angle for s in scene.shapes], np.float64)
    scenes = []
    for t in range(num_frames):
        shapes = [dataclasses.replace(s, center=(float(c[0]), float(c[1])), angle=float(a))
                  for s, c, a in zip(scene.shapes, centers, angles)]
        scenes.append(dataclasses.replace(scene, shapes=shapes, noise_seed=scene.noise_seed + t))
        centers += velocity
        for axis, limit in ((0, width), (1, height)):
            out = (centers[:, axis] < 0) | (centers[:, axis] > limit)
            velocity[out, axis] *= -1
            centers[:, axis] = np.clip(centers[:, axis], 0, limit)
        angles += spin
    return scenes


def write_shapes_video(path: str, num_frames: int = 90, width: int = 640, height: int = 480,
                       fps: float = 15.0, seed: int = 0, with_truth: bool = False,
                       png_dir: Optional[str] = None) -> Optional[List[List[Tuple[int, np.ndarray]]]]:
    """Render :func:`moving_scenes` into a video file (``mp4v`` for .mp4, MJPG for .avi),
    and with ``png_dir`` also every frame, losslessly, as ``png_dir/frame_000123.png``.

    Returns:
        With ``with_truth``, per frame the ground truth ``[(category_id, (H, W) bool
        mask)]`` (bottom to top); else None.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{path}: the output folder {folder} does not exist")
    fourcc = "MJPG" if path.lower().endswith(".avi") else "mp4v"
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), float(fps), (int(width), int(height)))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write a video here")
    if png_dir is not None:
        os.makedirs(png_dir, exist_ok=True)
    truth = []
    try:
        for t, scene in enumerate(moving_scenes(num_frames, width, height, seed)):
            image, instances = render_scene(scene)
            writer.write(image)
            if png_dir is not None:
                cv2.imwrite(os.path.join(png_dir, f"frame_{t:06d}.png"), image)
            if with_truth:
                truth.append(instances)
    finally:
        writer.release()
    return truth if with_truth else None


def _size(text: str) -> Tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, not {text!r}")
    return w, h


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description="Write a video of the built-in shapes in motion.")
    parser.add_argument("output", help="video file to write (.mp4 or .avi)")
    parser.add_argument("--frames", type=int, default=90, help="number of frames")
    parser.add_argument("--size", type=_size, default=(640, 480), help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--fps", type=float, default=15.0, help="frame rate")
    parser.add_argument("--seed", type=int, default=0, help="scene seed")
    parser.add_argument("--png-dir", default=None, help="also write every frame as a PNG into this folder")
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_shapes_video(args.output, args.frames, args.size[0], args.size[1], args.fps, args.seed,
                       png_dir=args.png_dir)
    print(f"{args.output}: {args.frames} frames, {args.size[0]}x{args.size[1]}, {args.fps:g} frames/s")
    return args.output


if __name__ == "__main__":
    main()
