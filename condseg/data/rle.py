"""COCO compressed RLE of a mask, json-ready (the one encoder of the datasets and the results)."""
from typing import Dict

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["encode_mask"]


def encode_mask(mask: np.ndarray) -> Dict:
    """``(H, W)`` bool -> COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
