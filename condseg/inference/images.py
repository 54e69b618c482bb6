"""The image pipeline of the demo: read -> model (in batches) -> draw, write, show, and
one COCO-format json of all the predictions.

Images that cannot be read, and renderings that cannot be written, are listed in the
summary's ``problems``; the others are still processed. On an error or Ctrl-C the json
of the images done so far is still written.
"""
import json
import os
import time
from typing import Iterator, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from condseg.inference.sinks import show_image
from condseg.inference.sources import ImageReadError, batched, read_image
from condseg.inference.summary import ImageSummary

__all__ = ["run_images"]

_Item = Tuple[str, Optional[str], np.ndarray]  # input path, output path or None, (H, W, 3) uint8 BGR


def run_images(predictor, files: Sequence[str], outputs: Optional[Sequence[Optional[str]]] = None,
               json_path: Optional[str] = None, batch_size: int = 1, show: bool = False,
               progress: bool = True) -> ImageSummary:
    """Run ``predictor`` (a :class:`condseg.Predictor`) on image files.

    Args:
        files: image paths, in the order of the json's ``images``.
        outputs: per file, where to write its rendering (None: not written); default none.
        json_path: COCO-format predictions (:meth:`condseg.Predictor.to_coco`), or None.
        batch_size: images per model call.
        show: show each rendering in a window (any key: the next image; ``q`` or Esc
            stops); only where :func:`condseg.inference.sinks.display_available`.
        progress: a progress bar on stderr.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    outputs = list(outputs) if outputs is not None else [None] * len(files)
    summary = ImageSummary()
    images_json, instances_done = [], []
    bar = tqdm(total=len(files), unit="image", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for batch in batched(_readable(files, outputs, summary, bar), batch_size):
            t0 = time.perf_counter()
            results = predictor.predict_batch([image for _, _, image in batch])
            summary.model += time.perf_counter() - t0
            for (path, out, image), instances in zip(batch, results):
                _draw(predictor, path, out, image, instances, show, summary)
                images_json.append({"id": len(images_json) + 1, "file_name": path,
                                    "height": int(image.shape[0]), "width": int(image.shape[1])})
                instances_done.append(instances)
                bar.update(1)
    finally:
        bar.close()
        if json_path:
            with open(json_path, "w") as f:
                json.dump(predictor.to_coco(images_json, instances_done), f)
    summary.wall = time.perf_counter() - start
    summary.images = len(images_json)
    summary.instances = sum(len(x) for x in instances_done)
    return summary


def _readable(files: Sequence[str], outputs: Sequence[Optional[str]], summary: ImageSummary,
              bar) -> Iterator[_Item]:
    """The images that can be read; the others go to ``summary.problems``."""
    for path, out in zip(files, outputs):
        try:
            image = read_image(path)
        except ImageReadError as e:
            summary.problems.append((path, str(e).split(": ", 1)[-1]))
            bar.update(1)
            continue
        yield path, out, image


def _draw(predictor, path: str, out: Optional[str], image: np.ndarray, instances, show: bool,
          summary: ImageSummary) -> None:
    """Render one image's predictions, write and show the rendering."""
    t0 = time.perf_counter()
    if out is not None or show:
        rendered = predictor.render(image, instances)
    if out is not None and not cv2.imwrite(out, rendered):
        summary.problems.append((out, "could not write the rendered image"))
    if show:
        show_image(os.path.basename(path), rendered, 0)
        cv2.destroyAllWindows()
    summary.draw += time.perf_counter() - t0
