"""FCOS decoding of one image without data-dependent control flow.

The same detections as :func:`condseg.modeling.fcos.postprocess.fcos_inference` for one
image, written so that ``torch.export`` can trace it with symbolic sizes:

* the pre-NMS top-k of a level is a fixed-size ``topk`` over the (location, class)
  scores with the non-candidates set to -1 (and -1 padding, so that ``k`` never exceeds
  the level's size), then the real candidates are picked out by a mask (the only
  data-dependent size before NMS), instead of ``nonzero`` followed by an ``if``;
* NMS is :func:`condseg.export.nms.batched_nms` (torchvision's in PyTorch, ONNX's
  ``NonMaxSuppression`` in the file);
* the post-NMS cap keeps every detection scoring at least the ``k``-th best score (ties
  kept, as ``nms_and_topk``), reading that score from a padded copy, without a branch on
  the number of detections;
* boxes are clipped to the image and empty ones dropped (``detector_postprocess`` at the
  input's own size).
"""
from typing import Dict, List

import torch

from .nms import batched_nms

__all__ = ["cell_centres", "level_candidates", "decode_image", "cap_detections", "clip_and_drop_empty"]

_NOT_A_CANDIDATE = -1.0  # below every real score, which are products of sigmoids (>= 0)


def cell_centres(cells: torch.Tensor, width, stride: int) -> torch.Tensor:
    """``(K, 2)`` float32 (x, y) px of the flat (row-major) cells of a feature map of
    ``width`` columns at ``stride``: the values of
    :func:`condseg.layers.compute_locations` at those rows, computed from the indices
    (no ``meshgrid``, whose expand-and-reshape puts guards on symbolic sizes)."""
    rows = torch.div(cells, width, rounding_mode="floor")
    cols = cells - rows * width  # not ``%``: the exporter takes no symbolic divisor there
    return torch.stack((cols * stride + stride // 2, rows * stride + stride // 2), dim=1).to(torch.float32)


def level_candidates(logits: torch.Tensor, reg: torch.Tensor, ctrness: torch.Tensor, stride: int,
                     score_thresh: float, pre_nms_topk: int, thresh_with_ctr: bool) -> Dict[str, torch.Tensor]:
    """The ``pre_nms_topk`` best (location, class) pairs of one level, valid or not.

    Args:
        logits: ``(1, C, H, W)``; reg: ``(1, 4, H, W)`` distances in strides;
        ctrness: ``(1, 1, H, W)`` logits.
    Returns:
        ``boxes (k, 4)`` XYXY px, ``probs (k,)`` = sigmoid(cls) * sigmoid(ctr), ``classes (k,)``,
        ``loc_inds (k,)`` (cell in the level), ``valid (k,)`` bool (a real candidate),
        with ``k = pre_nms_topk``.
    """
    c, h, w = logits.shape[1:]
    cls_prob = logits[0].flatten(1).t().sigmoid()  # (H*W, C), location-major
    ctr = ctrness[0, 0].flatten().sigmoid()
    if thresh_with_ctr:
        cls_prob = cls_prob * ctr[:, None]
    candidates = cls_prob > score_thresh
    if not thresh_with_ctr:
        cls_prob = cls_prob * ctr[:, None]
    flat = torch.where(candidates, cls_prob, _NOT_A_CANDIDATE).flatten()
    flat = torch.cat([flat, flat.new_full((pre_nms_topk,), _NOT_A_CANDIDATE)])
    probs, inds = flat.topk(pre_nms_topk)
    valid = probs > _NOT_A_CANDIDATE / 2
    inds = torch.where(valid, inds, torch.zeros_like(inds))  # padding points at cell 0, masked out later
    loc_inds, classes = inds // c, inds % c
    pts = cell_centres(loc_inds, w, stride)
    d = (reg[0].flatten(1).t() * stride)[loc_inds]
    boxes = torch.stack((pts[:, 0] - d[:, 0], pts[:, 1] - d[:, 1], pts[:, 0] + d[:, 2], pts[:, 1] + d[:, 3]), dim=1)
    return {"boxes": boxes, "probs": probs, "classes": classes, "loc_inds": loc_inds, "locations": pts,
            "valid": valid}


def cap_detections(scores: torch.Tensor, post_nms_topk: int) -> torch.Tensor:
    """``(D,)`` bool: the detections scoring at least the ``post_nms_topk``-th best score
    (all when fewer, or when ``post_nms_topk <= 0``). ``scores``: ``(D,)`` >= 0."""
    if post_nms_topk <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    ranked = torch.sort(scores, descending=True).values
    ranked = torch.cat([ranked, scores.new_full((post_nms_topk,), _NOT_A_CANDIDATE)])
    return scores >= ranked[post_nms_topk - 1]


def clip_and_drop_empty(dets: Dict[str, torch.Tensor], height, width) -> Dict[str, torch.Tensor]:
    """Boxes clipped to ``[0, width] x [0, height]``; detections whose clipped box has no
    area removed (every field)."""
    b = dets["boxes"]
    x, y = b[:, 0::2].clamp(0, width), b[:, 1::2].clamp(0, height)
    boxes = torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    dets = {k: v[keep] for k, v in dets.items() if k != "boxes"}
    dets["boxes"] = boxes[keep]
    return dets


def decode_image(logits: List[torch.Tensor], reg: List[torch.Tensor], ctrness: List[torch.Tensor],
                 strides: List[int], *, score_thresh: float, pre_nms_topk: int, nms_thresh: float,
                 post_nms_topk: int, thresh_with_ctr: bool, num_classes: int) -> Dict[str, torch.Tensor]:
    """Detections of one image from per-level head outputs (``(1, ., H_l, W_l)`` each).

    Returns ``boxes (D, 4)`` XYXY px (unclipped), ``scores (D,)``, ``classes (D,)`` int64,
    ``locations (D, 2)``, ``fpn_levels (D,)`` and ``flat_inds (D,)`` (the cell in all levels
    flattened in order, P3 first), sorted by score, descending.
    """
    per_level, offset = [], 0
    for lvl, (lg, rg, ct, stride) in enumerate(zip(logits, reg, ctrness, strides)):
        d = level_candidates(lg, rg, ct, stride, score_thresh, pre_nms_topk, thresh_with_ctr)
        d["fpn_levels"] = torch.full_like(d["classes"], lvl)
        d["flat_inds"] = d.pop("loc_inds") + offset
        offset = offset + lg.shape[2] * lg.shape[3]
        per_level.append(d)
    merged = {k: torch.cat([d[k] for d in per_level]) for k in per_level[0]}
    valid = merged.pop("valid")
    dets = {k: v[valid] for k, v in merged.items()}
    dets["scores"] = torch.sqrt(dets.pop("probs"))
    keep = batched_nms(dets["boxes"], dets["scores"], dets["classes"], float(nms_thresh), int(num_classes))
    dets = {k: v[keep] for k, v in dets.items()}
    capped = cap_detections(dets["scores"], post_nms_topk)
    return {k: v[capped] for k, v in dets.items()}
