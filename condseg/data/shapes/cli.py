"""``python -m condseg.data.shapes``: generate a split (and optionally its preview)."""
from __future__ import annotations

import argparse
import os
import time
from typing import Optional, Sequence

import cv2

from .preview import draw_preview
from .write import generate_shapes_dataset

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(
        prog="shapes.py",  # the usage line --help has always shown
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
