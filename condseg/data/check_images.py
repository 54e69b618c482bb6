"""Read every image of some datasets once and list the ones that cannot be read.

The first thing to run on new data (``tools/train_net.py --check-data``): a training run
replaces unreadable images as it meets them, one warning each, while this reports all of
them at once, before any training, with a progress bar.
"""
from concurrent.futures import ThreadPoolExecutor
from typing import List, Sequence, Tuple

from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils

__all__ = ["check_images"]


def _problem(file_name: str, image_format: str):
    try:
        utils.read_image(file_name, format=image_format)
    except OSError as e:  # missing, not an image, truncated
        return f"{type(e).__name__}: {e}"
    return None


def check_images(dataset_names: Sequence[str], image_format: str = "BGR", workers: int = 4,
                 progress: bool = True) -> Tuple[int, List[Tuple[str, str, str]]]:
    """Decode every image of the datasets (each file once).

    Returns:
        ``(number of files read, [(dataset, file_name, reason), ...])`` for the files that
        could not be read.
    """
    files = {}
    for name in dataset_names:
        for d in DatasetCatalog.get(name):
            files.setdefault(d["file_name"], name)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="image", desc="checking images", dynamic_ncols=True)
    problems = []
    with ThreadPoolExecutor(max(1, workers)) as pool:  # decoding releases the GIL
        for (file_name, name), reason in zip(files.items(), pool.map(lambda f: _problem(f, image_format), files)):
            if reason is not None:
                problems.append((name, file_name, reason))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return len(files), problems
