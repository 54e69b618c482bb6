"""FCOS inference: decode per-level predictions into detections, then NMS.

Pure functions of tensors. Per image and level: candidates are (location, class) pairs
with score above a threshold (at most ``pre_nms_topk`` of them); boxes are decoded from
the stride-normalised distances; levels are concatenated, class-aware NMS is applied and
at most ``post_nms_topk`` detections are kept (ties at the cut are kept).
"""
from typing import Dict, List

import torch
from torchvision.ops import batched_nms

__all__ = ["decode_level", "nms_and_topk", "fcos_inference", "gather_at_detections"]


def decode_level(
    locations: torch.Tensor,
    logits: torch.Tensor,
    reg_pred: torch.Tensor,
    ctrness_pred: torch.Tensor,
    stride: int,
    score_thresh: float,
    pre_nms_topk: int,
    thresh_with_ctr: bool,
) -> List[Dict[str, torch.Tensor]]:
    """Candidates of one FPN level, for each image.

    Args:
        locations: ``(H*W, 2)`` points of the level.
        logits: ``(N, C, H, W)`` class logits; reg_pred: ``(N, 4, H, W)`` distances in
            strides; ctrness_pred: ``(N, 1, H, W)`` logits.
    Returns:
        per image a dict: ``boxes (D, 4)`` XYXY px, ``scores (D,)`` =
        sqrt(sigmoid(cls) * sigmoid(ctr)), ``classes (D,)``, ``locations (D, 2)``,
        ``loc_inds (D,)`` (flat cell index in the level).
    """
    n, c, h, w = logits.shape
    cls_prob = logits.permute(0, 2, 3, 1).reshape(n, h * w, c).sigmoid()
    reg = reg_pred.permute(0, 2, 3, 1).reshape(n, h * w, 4) * stride
    ctr = ctrness_pred.permute(0, 2, 3, 1).reshape(n, h * w).sigmoid()

    if thresh_with_ctr:
        cls_prob = cls_prob * ctr[:, :, None]
    candidates = cls_prob > score_thresh
    if not thresh_with_ctr:
        cls_prob = cls_prob * ctr[:, :, None]

    results = []
    for i in range(n):
        nz = candidates[i].nonzero()  # location-major, class-minor
        loc_inds, classes = nz[:, 0], nz[:, 1]
        probs = cls_prob[i][loc_inds, classes]
        if probs.numel() > pre_nms_topk:
            probs, keep = probs.topk(pre_nms_topk, sorted=False)
            loc_inds, classes = loc_inds[keep], classes[keep]
        pts = locations[loc_inds]
        d = reg[i][loc_inds]
        boxes = torch.stack((pts[:, 0] - d[:, 0], pts[:, 1] - d[:, 1], pts[:, 0] + d[:, 2], pts[:, 1] + d[:, 3]), dim=1)
        out = {"boxes": boxes, "scores": torch.sqrt(probs), "classes": classes, "locations": pts, "loc_inds": loc_inds}
        results.append(out)
    return results


def nms_and_topk(dets: Dict[str, torch.Tensor], nms_thresh: float, post_nms_topk: int) -> Dict[str, torch.Tensor]:
    """Class-aware NMS on unclipped boxes (output sorted by score, descending), then keep
    every detection scoring at least the ``post_nms_topk``-th largest score."""
    keep = batched_nms(dets["boxes"], dets["scores"], dets["classes"], nms_thresh)
    dets = {k: v[keep] for k, v in dets.items()}
    num = dets["scores"].numel()
    if num > post_nms_topk > 0:
        thresh, _ = torch.kthvalue(dets["scores"].cpu(), num - post_nms_topk + 1)
        keep = torch.nonzero(dets["scores"] >= thresh.item()).squeeze(1)
        dets = {k: v[keep] for k, v in dets.items()}
    return dets


def fcos_inference(
    locations: List[torch.Tensor],
    logits: List[torch.Tensor],
    reg_pred: List[torch.Tensor],
    ctrness_pred: List[torch.Tensor],
    strides: List[int],
    score_thresh: float,
    pre_nms_topk: int,
    nms_thresh: float,
    post_nms_topk: int,
    thresh_with_ctr: bool,
) -> List[Dict[str, torch.Tensor]]:
    """Detections of every image from per-level predictions (lists indexed by level).

    Returns per image the dict of :func:`decode_level` (levels concatenated, P3 first)
    plus ``fpn_levels (D,)``, after :func:`nms_and_topk`.
    """
    num_images = logits[0].shape[0]
    per_level = []
    for lvl in range(len(logits)):
        dets = decode_level(
            locations[lvl], logits[lvl], reg_pred[lvl], ctrness_pred[lvl], strides[lvl],
            score_thresh, pre_nms_topk, thresh_with_ctr,
        )
        for d in dets:
            d["fpn_levels"] = torch.full_like(d["classes"], lvl)
        per_level.append(dets)
    results = []
    for i in range(num_images):
        merged = {k: torch.cat([per_level[lvl][i][k] for lvl in range(len(logits))]) for k in per_level[0][i]}
        results.append(nms_and_topk(merged, nms_thresh, post_nms_topk))
    return results


def gather_at_detections(per_level: List[torch.Tensor], image: int, fpn_levels: torch.Tensor,
                         loc_inds: torch.Tensor) -> torch.Tensor:
    """``(D, K)``: the vectors of per-level maps ``[(N, K, H_l, W_l)]`` at the cells of one
    image's detections (``fpn_levels``, ``loc_inds`` of :func:`fcos_inference`), e.g. the
    mask-head parameters CondInst's controller predicts at every location."""
    maps = torch.cat([m[image].flatten(1) for m in per_level], dim=1)  # (K, sum_l H_l * W_l)
    sizes = torch.tensor([0] + [m.shape[-2] * m.shape[-1] for m in per_level[:-1]], device=loc_inds.device)
    return maps[:, sizes.cumsum(0)[fpn_levels] + loc_inds].t()
