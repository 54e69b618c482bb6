"""CondInst's dynamic mask heads: per-instance 1x1-conv stacks whose weights are predicted.

Each instance n carries a parameter vector (the controller's output at its location).
It is parsed into the weights and biases of a tiny head of 1x1 convolutions
(``[C_in (+2) -> ch] -> ReLU -> [ch -> ch] -> ReLU ... -> [ch -> 1]``) that runs on the
mask-branch features of the instance's image, preceded by the two relative coordinates
``(location_n - pixel) / soi_n`` when enabled.

Two equal formulations of the heads:

* ``"grouped_conv"``: the published one. The inputs of all instances are gathered
  into ``(1, N * C_in, H, W)`` and every layer is one grouped convolution with N groups.
* ``"bmm"``: 1x1 convolutions are matrix products. The first layer is one GEMM per
  image over that image's shared features and the pixel grid (no per-instance copy of
  the features, no im2col: the relative coordinates are affine in the grid). Later
  layers are batched matmuls, all in image order; only the one-channel output is
  put back in the caller's instance order.

Both take and return the same tensors; :func:`dynamic_mask_heads` dispatches.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .geometry import compute_locations

__all__ = [
    "dynamic_layer_shapes",
    "dynamic_param_counts",
    "parse_dynamic_params",
    "relative_coords",
    "dynamic_mask_heads",
    "bmm_operands",
    "default_block",
    "image_blocks",
    "IMPLS",
]

IMPLS = ("grouped_conv", "bmm")


def dynamic_layer_shapes(in_channels: int, channels: int, num_layers: int, rel_coords: bool = True) -> List[Tuple[int, int]]:
    """``(out, in)`` of each 1x1 conv of the head; the first sees ``in_channels (+2)``."""
    if num_layers < 2:
        raise ValueError(f"MODEL.CONDINST.MASK_HEAD.NUM_LAYERS must be >= 2, got {num_layers}")
    first_in = in_channels + (2 if rel_coords else 0)
    return [(channels, first_in)] + [(channels, channels)] * (num_layers - 2) + [(1, channels)]


def dynamic_param_counts(in_channels: int, channels: int, num_layers: int, rel_coords: bool = True):
    """``(weight_nums, bias_nums)`` per layer; their total is the controller's output size
    (169 for the default 8-channel, 3-layer head with relative coordinates)."""
    shapes = dynamic_layer_shapes(in_channels, channels, num_layers, rel_coords)
    return [o * i for o, i in shapes], [o for o, _ in shapes]


def parse_dynamic_params(params: torch.Tensor, layer_shapes: Sequence[Tuple[int, int]]):
    """Split ``(N, P)`` parameter rows into per-layer weights and biases.

    The row holds all weights first (layer by layer, each read row-major as
    (output channel, input channel)), then all biases.

    Returns:
        ``weights``: per layer ``(N, out, in)``; ``biases``: per layer ``(N, out)``.
    """
    n = params.shape[0]
    weight_nums = [o * i for o, i in layer_shapes]
    bias_nums = [o for o, _ in layer_shapes]
    expected = sum(weight_nums) + sum(bias_nums)
    if params.dim() != 2 or params.shape[1] != expected:
        raise ValueError(f"expected dynamic params of shape (N, {expected}), got {tuple(params.shape)}")
    chunks = torch.split(params, weight_nums + bias_nums, dim=1)
    k = len(layer_shapes)
    weights = [w.reshape(n, o, i) for w, (o, i) in zip(chunks[:k], layer_shapes)]
    biases = [b.reshape(n, o) for b, (o, _) in zip(chunks[k:], layer_shapes)]
    return weights, biases


def relative_coords(locations: torch.Tensor, soi: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``(N, 2, P)`` with ``[n, k, p] = (locations[n, k] - grid[p, k]) / soi[n]``.

    Args:
        locations: ``(N, 2)`` (x, y) px of the instances; soi: ``(N,)`` size of interest of
        each instance's FPN level; grid: ``(P, 2)`` pixel centres of the mask features.
    """
    rel = locations.to(torch.float32)[:, :, None] - grid.to(torch.float32).t()[None]
    return rel / soi.to(torch.float32)[:, None, None]


def _heads_grouped_conv(mask_feats, im_inds, rel, weights, biases):
    n = im_inds.numel()
    _, c, h, w = mask_feats.shape
    x = mask_feats[im_inds].reshape(n, c, h * w)
    if rel is not None:
        x = torch.cat([rel.to(x.dtype), x], dim=1)
    x = x.reshape(1, -1, h, w)
    for k, (wk, bk) in enumerate(zip(weights, biases)):
        out, inp = wk.shape[1:]
        x = F.conv2d(x, wk.reshape(n * out, inp, 1, 1), bk.reshape(-1), groups=n)
        if k < len(weights) - 1:
            x = F.relu(x)
    return x.reshape(n, 1, h, w)


def bmm_operands(mask_feats, params, im_inds, locations, soi, layer_shapes, mask_feat_stride=8, rel_coords=True):
    """The operands of the bmm formulation, instances grouped by image.

    The first layer becomes one GEMM per image over ``rows = [grid_x; grid_y; features]``:
    the coordinate inputs ``(loc - g) / soi`` are affine in the pixel grid ``g``, so their
    weights become ``-W_rel / soi`` on the grid rows plus ``W_rel . loc / soi`` in the bias.

    Returns:
        ``order``: ``(N,)`` instance indices sorted by image (stable); ``counts``: instances
        per image (list of B ints); ``rows``: ``(B, K, H*W)`` with K = C (+2);
        ``weights`` / ``biases``: per layer ``(N, out, in)`` / ``(N, out)`` in ``order``.
    """
    b, c, h, w = mask_feats.shape
    order = torch.argsort(im_inds, stable=True)
    counts = torch.bincount(im_inds, minlength=b).tolist()
    weights, biases = parse_dynamic_params(params[order], layer_shapes)
    feats = mask_feats.reshape(b, c, h * w)
    if not rel_coords:
        return order, counts, feats, weights, biases
    w0, b0 = weights[0], biases[0]
    scaled = w0[:, :, :2] / soi[order].to(w0.dtype)[:, None, None]  # (N, out, 2)
    biases[0] = b0 + (scaled * locations[order].to(w0.dtype)[:, None, :]).sum(dim=2)
    weights[0] = torch.cat([-scaled, w0[:, :, 2:]], dim=2)
    grid = compute_locations(h, w, mask_feat_stride, device=mask_feats.device).to(feats.dtype)
    rows = torch.cat([grid.t()[None].expand(b, 2, h * w), feats], dim=1)  # (B, 2 + C, P)
    return order, counts, rows, weights, biases


def default_block(device: torch.device) -> int:
    """Instances per block of the fused, blocked paths (:mod:`.dynamic_mask_loss`,
    :mod:`.dynamic_mask_probs`): 8 on the CPU, whose block tensors then stay in cache, 64
    on GPUs."""
    return 8 if device.type == "cpu" else 64


def image_blocks(counts: Sequence[int], block: int):
    """``(image, slice)`` of every block of at most ``block`` instances, the instances
    grouped by image as :func:`bmm_operands` orders them (``counts`` per image): a block
    never spans two images."""
    start = 0
    for image, count in enumerate(counts):
        for lo in range(start, start + count, block):
            yield image, slice(lo, min(lo + block, start + count))
        start += count


def _heads_bmm(rows, counts, weights, biases):
    """``(N, 1, H*W)`` logits in image order: one GEMM per image for the first layer,
    then batched matmuls."""
    out, k = weights[0].shape[1:]
    p = rows.shape[2]
    x = torch.cat([(wb.reshape(-1, k) @ rows[i]).reshape(-1, out, p) for i, wb in enumerate(weights[0].split(counts)) if wb.shape[0]])
    x = x + biases[0][:, :, None]
    for wk, bk in zip(weights[1:], biases[1:]):
        x = torch.baddbmm(bk[:, :, None], wk, F.relu(x))
    return x


def dynamic_mask_heads(
    mask_feats: torch.Tensor,
    params: torch.Tensor,
    im_inds: torch.Tensor,
    locations: torch.Tensor,
    soi: torch.Tensor,
    layer_shapes: Sequence[Tuple[int, int]],
    mask_feat_stride: int = 8,
    rel_coords: bool = True,
    impl: str = "bmm",
) -> torch.Tensor:
    """Run every instance's dynamic head on its image's mask features.

    Args:
        mask_feats: ``(B, C, H, W)`` mask-branch output at ``mask_feat_stride``.
        params: ``(N, P)`` controller outputs, ``P = sum(dynamic_param_counts(...))``.
        im_inds: ``(N,)`` image of each instance (any order).
        locations: ``(N, 2)`` (x, y) px of the location that predicted each instance.
        soi: ``(N,)`` size of interest of each instance's FPN level (64 ... 1024).
        layer_shapes: from :func:`dynamic_layer_shapes`.
        impl: ``"grouped_conv"`` or ``"bmm"`` (equal results).
    Returns:
        ``(N, 1, H, W)`` mask logits at ``mask_feat_stride``.
    """
    if impl not in IMPLS:
        raise ValueError(f"MODEL.CONDINST.MASK_HEAD.IMPL must be one of {IMPLS} or 'auto', got {impl!r}")
    n = params.shape[0]
    h, w = mask_feats.shape[2:]
    if n == 0:  # empty, but still attached to the graph of both inputs
        return params.new_zeros((0, 1, h, w)) + 0 * (params.sum() + mask_feats.sum())
    if impl == "grouped_conv":
        weights, biases = parse_dynamic_params(params, layer_shapes)
        grid = compute_locations(h, w, mask_feat_stride, device=mask_feats.device)
        rel = relative_coords(locations, soi, grid) if rel_coords else None
        return _heads_grouped_conv(mask_feats, im_inds, rel, weights, biases)
    order, counts, rows, weights, biases = bmm_operands(
        mask_feats, params, im_inds, locations, soi, layer_shapes, mask_feat_stride, rel_coords
    )
    return _heads_bmm(rows, counts, weights, biases)[torch.argsort(order)].reshape(n, 1, h, w)
