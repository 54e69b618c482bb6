"""CondInst's mask computation for one image, in ops that trace with symbolic sizes.

* :func:`mask_heads_one_image`: the ``bmm`` formulation of
  :func:`condseg.layers.dynamic_mask_heads` for the instances of a single image: the first
  1x1 layer as one matrix product over ``[grid_x; grid_y; features]`` (the relative
  coordinates ``(loc - grid) / soi`` are affine in the grid, so they fold into that
  layer's weights and bias), the later layers as batched matrix products. Same math as
  ``bmm_operands`` + ``_heads_bmm``, without the per-image split (``bincount().tolist()``).
* :func:`mask_branch_features`: the mask branch, its levels fused by
  :func:`aligned_upsample`;
* :func:`aligned_upsample`: :func:`condseg.layers.aligned_bilinear` written without
  in-place writes into views (each output phase is computed, then the phases are
  interleaved by ``stack`` + ``flatten``), with ``torch.lerp``'s two-sided formula, so
  the values are the same.
"""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from condseg.layers import parse_dynamic_params

from .decode import cell_centres

__all__ = ["mask_branch_features", "mask_heads_one_image", "aligned_upsample"]


def mask_branch_features(branch, features: Dict[str, torch.Tensor], strides: Dict[str, int]) -> torch.Tensor:
    """``MaskBranch.forward`` with :func:`aligned_upsample` for the level fusion, by the
    ratio of the levels' ``strides`` (the backbone's; on an input padded to the
    backbone's ``size_divisibility`` it is the ratio of their sizes, which the branch
    reads from the shapes): ``(1, out_channels, H_3, W_3)`` from the FPN features by name."""
    x = branch.refine[0](features[branch.in_features[0]])
    for refine, name in zip(branch.refine[1:], branch.in_features[1:]):
        y = refine(features[name])
        x = x + aligned_upsample(y, strides[name] // branch.out_stride)
    return branch.predictor(branch.tower(x))


def mask_heads_one_image(mask_feats: torch.Tensor, params: torch.Tensor, locations: torch.Tensor, soi: torch.Tensor,
                         layer_shapes: Sequence[Tuple[int, int]], mask_feat_stride: int,
                         rel_coords: bool) -> torch.Tensor:
    """``(D, 1, h, w)`` mask logits of one image's D instances.

    Args:
        mask_feats: ``(1, C, h, w)`` mask-branch output at ``mask_feat_stride``.
        params: ``(D, P)`` controller outputs; locations: ``(D, 2)`` (x, y) px;
        soi: ``(D,)`` size of interest of each instance's FPN level.
    """
    n = params.shape[0]
    _, c, h, w = mask_feats.shape
    weights, biases = parse_dynamic_params(params, layer_shapes)
    rows = mask_feats[0].reshape(c, h * w)
    w0, b0 = weights[0], biases[0]
    if rel_coords:
        scaled = w0[:, :, :2] / soi.to(w0.dtype)[:, None, None]  # (D, out, 2)
        b0 = b0 + (scaled * locations.to(w0.dtype)[:, None, :]).sum(dim=2)
        w0 = torch.cat([-scaled, w0[:, :, 2:]], dim=2)
        cells = torch.arange(h * w, device=mask_feats.device)
        grid = cell_centres(cells, w, mask_feat_stride).to(rows.dtype)
        rows = torch.cat([grid.t(), rows], dim=0)  # (2 + C, h*w)
    out, k = layer_shapes[0][0], rows.shape[0]
    x = (w0.reshape(n * out, k) @ rows).reshape(n, out, h * w) + b0[:, :, None]
    for wk, bk in zip(weights[1:], biases[1:]):
        x = torch.baddbmm(bk[:, :, None], wk, F.relu(x))
    return x.reshape(n, 1, h, w)


def _lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """``torch.lerp(a, b, t)`` for a constant ``t``, with its formula for each half."""
    return a + t * (b - a) if t < 0.5 else b - (b - a) * (1 - t)


def _aligned_linear_1d(x: torch.Tensor, factor: int, dim: int) -> torch.Tensor:
    """One axis of :func:`aligned_upsample`: length n -> ``factor * n``; output
    ``q = factor * j + s`` is ``lerp(x[j], x[j + 1], t)`` (``x[n] := x[n - 1]``) or, for the
    phases before ``factor // 2``, ``lerp(x[j - 1], x[j], t)`` (``x[-1] := x[0]``)."""
    n = x.shape[dim]
    following = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim=dim)
    preceding = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim=dim)
    pad = factor // 2
    phases: List[torch.Tensor] = []
    for s in range(factor):
        if s == pad:
            phases.append(x)
        elif s > pad:
            phases.append(_lerp(x, following, (s - pad) / factor))
        else:
            phases.append(_lerp(preceding, x, (s - pad + factor) / factor))
    return torch.stack(phases, dim=dim + 1).flatten(dim, dim + 1)


def aligned_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, factor*H, factor*W)``, the values of
    :func:`condseg.layers.aligned_bilinear`."""
    if factor == 1:
        return x
    return _aligned_linear_1d(_aligned_linear_1d(x, factor, 2), factor, 3)
