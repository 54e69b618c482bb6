"""FCOS training targets: which GT (if any) each feature-map location regresses.

Everything here is a pure function of tensors. Flattened tensors use the order the
losses consume: **level-major, then image, then row, then column**.
"""
from typing import List, Optional, Sequence

import torch

__all__ = ["fcos_size_ranges", "mask_centroids", "fcos_targets", "centerness_targets"]

INF = 100000000


def fcos_size_ranges(sizes_of_interest: Sequence[int], num_levels: int) -> List[List[float]]:
    """Per-level ``[lo, hi]`` range of ``max(l, t, r, b)`` (px): ``[-1, s0], [s0, s1], ..., [s_last, INF]``."""
    bounds = [-1.0] + [float(s) for s in sizes_of_interest] + [float(INF)]
    if len(bounds) - 1 != num_levels:
        raise ValueError(
            f"MODEL.FCOS.SIZES_OF_INTEREST has {len(sizes_of_interest)} values, so it defines "
            f"{len(bounds) - 1} levels, but the head runs on {num_levels} levels (MODEL.FCOS.IN_FEATURES)"
        )
    return [[bounds[i], bounds[i + 1]] for i in range(num_levels)]


def mask_centroids(bitmasks: torch.Tensor, boxes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Centroids ``(G, 2)`` as (x, y) of ``(G, H, W)`` masks, with integer pixel indices.

    ``cx = sum(mask * col) / sum(mask)``, ``cy`` likewise. An empty mask has no centroid:
    its box centre is used when ``boxes (G, 4)`` are given (else (0, 0)).
    """
    g, h, w = bitmasks.shape
    m = bitmasks.to(torch.float32)
    cols = torch.arange(w, dtype=torch.float32, device=m.device)
    rows = torch.arange(h, dtype=torch.float32, device=m.device)
    area = m.sum(dim=(1, 2))
    cx = (m.sum(dim=1) * cols).sum(dim=1) / area.clamp(min=1e-6)
    cy = (m.sum(dim=2) * rows).sum(dim=1) / area.clamp(min=1e-6)
    centers = torch.stack((cx, cy), dim=1)
    if boxes is not None:
        empty = area == 0
        if empty.any():
            box_centers = torch.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2), dim=1)
            centers = torch.where(empty[:, None], box_centers.to(centers.dtype), centers)
    return centers


def _targets_single_image(
    locations: torch.Tensor,
    loc_strides: torch.Tensor,
    loc_ranges: torch.Tensor,
    boxes: torch.Tensor,
    classes: torch.Tensor,
    centers: torch.Tensor,
    num_classes: int,
    center_sample: bool,
    radius: float,
):
    """Targets for one image's locations (all levels concatenated).

    Args:
        locations: ``(L, 2)``; loc_strides: ``(L,)``; loc_ranges: ``(L, 2)``.
        boxes: ``(G, 4)`` XYXY px; classes: ``(G,)``; centers: ``(G, 2)`` sampling centres.
    Returns:
        labels ``(L,)`` (``num_classes`` = background), pixel distances ``(L, 4)``,
        GT index ``(L,)`` (within this image; -1 when the image has no GT).
    """
    num_loc = locations.shape[0]
    if boxes.shape[0] == 0:
        return (
            torch.full((num_loc,), num_classes, dtype=torch.int64, device=locations.device),
            locations.new_zeros((num_loc, 4)),
            torch.full((num_loc,), -1, dtype=torch.int64, device=locations.device),
        )
    xs, ys = locations[:, 0:1], locations[:, 1:2]
    l = xs - boxes[:, 0]
    t = ys - boxes[:, 1]
    r = boxes[:, 2] - xs
    b = boxes[:, 3] - ys
    reg = torch.stack((l, t, r, b), dim=2)  # (L, G, 4)

    if center_sample:
        reach = loc_strides[:, None] * radius  # (L, 1)
        cx, cy = centers[:, 0], centers[:, 1]
        x0 = torch.maximum(cx - reach, boxes[:, 0])
        y0 = torch.maximum(cy - reach, boxes[:, 1])
        x1 = torch.minimum(cx + reach, boxes[:, 2])
        y1 = torch.minimum(cy + reach, boxes[:, 3])
        to_region = torch.stack((xs - x0, ys - y0, x1 - xs, y1 - ys), dim=2)
        inside = to_region.min(dim=2).values > 0
    else:
        inside = reg.min(dim=2).values > 0

    max_dist = reg.max(dim=2).values
    cared = (max_dist >= loc_ranges[:, 0:1]) & (max_dist <= loc_ranges[:, 1:2])

    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].repeat(num_loc, 1)
    areas[~inside] = INF
    areas[~cared] = INF
    min_area, gt_idx = areas.min(dim=1)  # first index wins ties

    labels = classes[gt_idx].clone()
    labels[min_area == INF] = num_classes
    reg = reg[torch.arange(num_loc, device=reg.device), gt_idx]
    return labels, reg, gt_idx


def fcos_targets(
    locations: List[torch.Tensor],
    strides: Sequence[int],
    size_ranges: Sequence[Sequence[float]],
    gt_boxes: List[torch.Tensor],
    gt_classes: List[torch.Tensor],
    num_classes: int,
    center_sample: bool = True,
    radius: float = 1.5,
    gt_centers: Optional[List[torch.Tensor]] = None,
) -> dict:
    """Assign every location of every image to a GT box or to background.

    Args:
        locations: per level, ``(L_l, 2)`` points (same grid for all images).
        strides: per level stride (px); size_ranges: per level ``[lo, hi]`` (inclusive).
        gt_boxes: per image ``(G_i, 4)`` XYXY in padded-input pixels.
        gt_classes: per image ``(G_i,)`` int64 in ``[0, num_classes)``.
        center_sample: positives only inside ``radius`` strides of the GT centre
            (clipped to the box); otherwise anywhere inside the box.
        gt_centers: per image ``(G_i, 2)`` centres for sampling (CondInst passes mask
            centroids); ``None`` uses box centres.
    Returns:
        dict of flattened tensors (level-major, image, row, column), ``M = N * sum(L_l)``:
        ``labels (M,)`` (background = ``num_classes``), ``reg_targets (M, 4)`` divided by
        the stride, ``target_inds (M,)`` index into the batch's concatenated GTs (-1 when an
        image has no GT), ``im_inds (M,)``, ``fpn_levels (M,)``, ``locations (M, 2)``.
    """
    num_levels = len(locations)
    num_images = len(gt_boxes)
    device = locations[0].device
    num_loc_per_level = [loc.shape[0] for loc in locations]
    all_locations = torch.cat(locations, dim=0)
    loc_strides = torch.cat(
        [torch.full((n,), float(s), device=device) for n, s in zip(num_loc_per_level, strides)]
    )
    loc_ranges = torch.cat(
        [all_locations.new_tensor(r).expand(n, 2) for n, r in zip(num_loc_per_level, size_ranges)]
    )
    loc_levels = torch.cat(
        [torch.full((n,), lvl, dtype=torch.int64, device=device) for lvl, n in enumerate(num_loc_per_level)]
    )

    per_image = []
    gt_offset = 0
    for i in range(num_images):
        boxes = gt_boxes[i].to(all_locations.dtype)
        if gt_centers is not None:
            centers = gt_centers[i].to(all_locations.dtype)
        else:
            centers = torch.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2), dim=1)
        labels, reg, gt_idx = _targets_single_image(
            all_locations, loc_strides, loc_ranges, boxes, gt_classes[i], centers,
            num_classes, center_sample, radius,
        )
        reg = reg / loc_strides[:, None]
        target_inds = torch.where(gt_idx >= 0, gt_idx + gt_offset, gt_idx)
        gt_offset += boxes.shape[0]
        im_inds = torch.full_like(labels, i)
        per_image.append((labels, reg, target_inds, im_inds))

    # image-first -> level-major
    out = {}
    for k, name in enumerate(("labels", "reg_targets", "target_inds", "im_inds")):
        chunks = [item[k].split(num_loc_per_level, dim=0) for item in per_image]
        out[name] = torch.cat([chunks[i][lvl] for lvl in range(num_levels) for i in range(num_images)], dim=0)
    out["fpn_levels"] = torch.cat([loc_levels.new_full((n * num_images,), lvl) for lvl, n in enumerate(num_loc_per_level)])
    out["locations"] = torch.cat([loc.repeat(num_images, 1) for loc in locations], dim=0)
    return out


def centerness_targets(reg_targets: torch.Tensor) -> torch.Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` for ``(M, 4)`` positive targets."""
    if reg_targets.numel() == 0:
        return reg_targets.new_zeros(0)
    lr = reg_targets[:, [0, 2]]
    tb = reg_targets[:, [1, 3]]
    ctr = (lr.min(dim=1).values / lr.max(dim=1).values) * (tb.min(dim=1).values / tb.max(dim=1).values)
    return torch.sqrt(ctr)
