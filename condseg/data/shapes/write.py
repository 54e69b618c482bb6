"""The files of a split: images rendered by a process pool, then ``annotations.json``,
built under a temporary name and renamed into place under a file lock (see the package
docstring for the layout)."""
from __future__ import annotations

import contextlib
import glob
import json
import multiprocessing
import os
import shutil
from typing import List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from iopath.common.file_io import file_lock

from ..rle import encode_mask
from .classes import SHAPES_CLASSES
from .render import render_scene
from .scene import MIN_INSTANCES, sample_scene

__all__ = ["GENERATOR_VERSION", "shapes_dataset_dir", "generate_shapes_dataset"]

GENERATOR_VERSION = 2  # bump when the generated data changes: older splits on disk get regenerated
# cv2.imwrite PNG options: zlib level 1 with the RLE strategy and the Paeth filter, the
# fastest of the settings tried that was also among the smallest.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]
_DIRNAME = "condseg_shapes"


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
    rle = encode_mask(mask)
    return dict(
        category_id=int(category_id),
        segmentation=rle,
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
        ctx.set_forkserver_preload([__name__])  # no effect once the server runs
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
    exclusive lock across processes (iopath's ``file_lock``: ``.{name}.lock`` beside the
    split; a caller waiting over an hour for it raises), so concurrent callers (DDP ranks)
    generate it once and a crash leaves no complete-looking directory behind.
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
    with file_lock(os.path.join(parent, f".{name}")):
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
