"""CondInst's inference masks with the dynamic heads fused in: per-instance
``sigmoid(aligned_bilinear(heads(...), factor))``, without gradients.

The heads of :mod:`condseg.layers.dynamic_conv` ("bmm") run layer by layer over all
instances at once, so every hidden layer is an ``(N, ch, H*W)`` tensor written and read
again from memory, and the upsampling and the sigmoid add two more full-size copies.
Here the whole chain runs for a few instances at a time, whose hidden tensors stay in the
CPU cache, and each block's probabilities are written once, in place, into the output:
the same operations on the same operands as the bmm heads followed by
``aligned_bilinear(...).sigmoid()``, so the same values to float rounding.
"""
from typing import Optional, Sequence, Tuple

import torch

from .dynamic_conv import bmm_operands, default_block, image_blocks
from .geometry import _upsample

__all__ = ["dynamic_mask_probs"]


class _Buffers:
    """The work tensors of one block, allocated once for the largest block and reused
    (views of their first ``n`` instances): no allocation inside the loop, which with
    glibc's default settings would return memory to the system and page-fault it back
    at every block."""

    def __init__(self, like, block, channels, size, factor):
        h, w = size
        self.hidden = [like.new_empty((block, channels, h * w)) for _ in range(2)]
        self.logits = like.new_empty((block, 1, h * w))
        self.rows_up = like.new_empty((block, 1, factor * h, w))  # the upsampling's first pass
        self.out = like.new_empty((block, 1, factor * h, factor * w))  # a block's output, if needed

    def take(self, n):
        return [t[:n] for t in self.hidden], self.logits[:n], self.rows_up[:n]


def _block_probs(rows, weights, biases, size, factor, buffers, out):
    """Probabilities of one block of one image's instances, written into ``out``.

    Args:
        rows: ``(K, P)`` the image's input rows (``P = h * w``); weights / biases: per layer
        ``(n, out, in)`` / ``(n, out)``; size: ``(h, w)``; buffers: :class:`_Buffers`;
        out: ``(n, 1, factor*h, factor*w)`` contiguous.
    """
    n = weights[0].shape[0]
    k, p = rows.shape
    hidden, logits, rows_up = buffers.take(n)
    x = hidden[0]
    torch.addmm(biases[0].reshape(-1, 1), weights[0].reshape(-1, k), rows, out=x.view(-1, p))  # one GEMM
    for layer, (wk, bk) in enumerate(zip(weights[1:], biases[1:]), start=1):
        dst = logits if layer == len(weights) - 1 else hidden[layer % 2]
        torch.baddbmm(bk[:, :, None], wk, x.relu_(), out=dst)
        x = dst
    if factor == 1:
        out.copy_(x.view_as(out))
    else:
        _upsample(x.view(n, 1, *size), factor, rows_up, out)
    out.sigmoid_()


@torch.no_grad()
def dynamic_mask_probs(
    mask_feats: torch.Tensor,
    params: torch.Tensor,
    im_inds: torch.Tensor,
    locations: torch.Tensor,
    soi: torch.Tensor,
    layer_shapes: Sequence[Tuple[int, int]],
    mask_feat_stride: int = 8,
    factor: int = 2,
    rel_coords: bool = True,
    block: Optional[int] = None,
) -> torch.Tensor:
    """Mask probabilities of every instance's dynamic head, upsampled; no gradients.

    Args:
        mask_feats, params, im_inds, locations, soi, layer_shapes, mask_feat_stride,
        rel_coords: as :func:`condseg.layers.dynamic_mask_heads`.
        factor: aligned upsampling factor (mask-feature stride / mask output stride).
        block: instances per block (default 8 on the CPU, 64 on GPUs).
    Returns:
        ``(N, 1, factor*H, factor*W)`` probabilities in the order of ``params``, equal to
        ``aligned_bilinear(dynamic_mask_heads(..., impl="bmm"), factor).sigmoid()``.
    """
    n = params.shape[0]
    h, w = mask_feats.shape[2:]
    out = mask_feats.new_empty((n, 1, factor * h, factor * w))
    if n == 0:
        return out
    order, counts, rows, weights, biases = bmm_operands(
        mask_feats, params, im_inds, locations, soi, layer_shapes, mask_feat_stride, rel_coords
    )
    block = min(block or default_block(mask_feats.device), n)
    buffers = _Buffers(out, block, weights[0].shape[1], (h, w), factor)
    # blocks go in image order: straight into the output when that is the caller's order
    # (the model's), else through a block-sized buffer
    in_order = bool((order == torch.arange(n, device=order.device)).all())
    for image, sl in image_blocks(counts, block):
        dst = out[sl] if in_order else buffers.out[: sl.stop - sl.start]
        _block_probs(rows[image], [wk[sl] for wk in weights], [bk[sl] for bk in biases], (h, w), factor, buffers, dst)
        if not in_order:
            out.index_copy_(0, order[sl], dst)
    return out
