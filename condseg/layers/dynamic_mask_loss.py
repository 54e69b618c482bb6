"""CondInst's training loss with the dynamic heads fused in: per-instance dice loss of
``sigmoid(aligned_bilinear(heads(...), factor))``, forward and backward together.

Every instance's loss depends only on its own head, its image's features and its own
target, so the whole chain (head layers, upsampling, sigmoid, dice, and their gradients)
runs in blocks of a few instances whose tensors stay in the CPU cache, instead of as a
dozen passes over ``(N, C, H, W)`` tensors that do not. Nothing of full resolution is
kept: the forward stores only the gradients of the losses w.r.t. the parameters and
the mask features, which the backward scales by the incoming gradient. Those are exact
for any incoming gradient that is uniform over the instances of each image (the mean
loss CondInst uses); any other one triggers a second, recomputing pass, so the result
is always exact.

Equal to ``dice_loss(aligned_bilinear(dynamic_mask_heads(...), factor).sigmoid(), t)``
(:mod:`condseg.layers.dynamic_conv`), forward and gradients.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch.autograd.function import once_differentiable

from .dynamic_conv import bmm_operands, default_block, image_blocks
from .geometry import aligned_bilinear, aligned_bilinear_adjoint

__all__ = ["dynamic_mask_dice_loss"]


def _block_loss_and_grads(rows, weights, biases, targets, size, factor, eps, grad_loss, d_rows):
    """One block of instances of one image.

    Args:
        rows: ``(K, P)`` the image's input rows; ``weights`` / ``biases``: per layer
        ``(n, out, in)`` / ``(n, out)``; targets: ``(n, 1, factor*h, factor*w)``;
        size: ``(h, w)`` with ``h * w == P``; grad_loss: ``(n,)`` weights of the losses,
        or None for the losses only; d_rows: ``(K', P)`` accumulator of the gradient w.r.t.
        the last K' rows (with ``grad_loss``).
    Returns:
        losses ``(n,)``, and with ``grad_loss``: gradients of ``sum(grad_loss * losses)``
        w.r.t. the weights and the biases (lists like the inputs); the gradient w.r.t.
        the last K' rows is added to ``d_rows``.
    """
    n = weights[0].shape[0]
    k, p = rows.shape
    hidden = []
    x = torch.addmm(biases[0].reshape(-1, 1), weights[0].reshape(-1, k), rows).view(n, -1, p)  # one GEMM
    for wk, bk in zip(weights[1:], biases[1:]):
        x = x.relu_()
        hidden.append(x)
        x = torch.baddbmm(bk[:, :, None], wk, x)
    prob = aligned_bilinear(x.view(n, 1, *size), factor).sigmoid_()
    p_row, t_row = prob.view(n, 1, -1), targets.view(n, 1, -1)
    inter = torch.bmm(p_row, t_row.transpose(1, 2)).view(n)  # batched dot products: no temporaries
    union = torch.bmm(p_row, p_row.transpose(1, 2)).view(n) + torch.bmm(t_row, t_row.transpose(1, 2)).view(n) + eps
    losses = 1.0 - 2.0 * inter / union
    if grad_loss is None:
        return losses, None, None

    # d loss / d prob = (4 inter / union^2) prob - (2 / union) t; d prob / d up = prob (1 - prob)
    a = (-2.0 * grad_loss / union)[:, None, None, None]
    b = (4.0 * grad_loss * inter / (union * union))[:, None, None, None]
    d_up = torch.ops.aten.sigmoid_backward(torch.addcmul(prob * b, targets, a), prob)
    dx = aligned_bilinear_adjoint(d_up, factor).reshape(n, 1, -1)
    d_weights, d_biases = [], []
    for layer in range(len(weights) - 1, 0, -1):
        inp = hidden[layer - 1]
        d_weights.append(torch.bmm(dx, inp.transpose(1, 2)))
        d_biases.append(dx.sum(2))
        w_t = weights[layer].transpose(1, 2)
        d_inp = w_t * dx if dx.shape[1] == 1 else torch.bmm(w_t, dx)  # one output channel: an outer product
        dx = torch.ops.aten.threshold_backward(d_inp, inp, 0)  # ReLU
    d_weights.append((dx.reshape(-1, p) @ rows.t()).view(n, -1, k))
    d_biases.append(dx.sum(2))
    fixed = k - d_rows.shape[0]  # leading grid rows: no gradient wanted
    d_rows.addmm_(weights[0].reshape(-1, k)[:, fixed:].t(), dx.reshape(-1, p))
    return losses, d_weights[::-1], d_biases[::-1]


def _run_blocks(rows, num_grad_rows, counts, weights, biases, targets, order, size, factor, eps, block, grad_loss):
    """:func:`_block_loss_and_grads` over all blocks (instance ``order[i]`` of ``targets``
    is the i-th); grads concatenated, and summed per image for the last ``num_grad_rows``
    rows (the features; the grid rows before them need none)."""
    want = grad_loss is not None
    d_rows = rows.new_zeros(rows.shape[0], num_grad_rows, rows.shape[2]) if want else None
    results = []
    for image, sl in image_blocks(counts, block):
        results.append(_block_loss_and_grads(
            rows[image], [wk[sl] for wk in weights], [bk[sl] for bk in biases], targets[order[sl]].to(rows.dtype),
            size, factor, eps, grad_loss[sl] if want else None, d_rows[image] if want else None,
        ))
    losses = torch.cat([r[0] for r in results])
    if not want:
        return losses, None, None
    num = len(weights)
    grads = [torch.cat([r[1][j] for r in results]) for j in range(num)]
    grads += [torch.cat([r[2][j] for r in results]) for j in range(num)]
    return losses, grads, d_rows


class _FusedDynamicMaskDice(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # mixed precision: computed in float32
    def forward(ctx, rows, feats, targets, order, counts, size, factor, eps, block, *weights_and_biases):
        num = len(weights_and_biases) // 2
        weights, biases = list(weights_and_biases[:num]), list(weights_and_biases[num:])
        want_grads = any(ctx.needs_input_grad)
        ones = rows.new_ones(targets.shape[0]) if want_grads else None
        with torch.no_grad():
            losses, grads, d_feats = _run_blocks(
                rows, feats.shape[1], counts, weights, biases, targets, order, size, factor, eps, block, ones
            )
        if want_grads:
            ctx.save_for_backward(rows, targets, order, d_feats, *weights, *biases, *grads)
            ctx.config = (counts, size, factor, eps, block, num)
            ctx.feats_shape = feats.shape
        return losses

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_losses):
        counts, size, factor, eps, block, num = ctx.config
        rows, targets, order, d_feats, *rest = ctx.saved_tensors
        weights, biases, grads = rest[:num], rest[num : 2 * num], rest[2 * num :]
        per_image = list(grad_losses.split(counts))
        if all(bool((g == g[0]).all()) for g in per_image if g.numel()):  # uniform per image: scale
            firsts = torch.stack([g[0] if g.numel() else g.new_zeros(()) for g in per_image])
            scaled = [g * grad_losses.view(-1, *[1] * (g.dim() - 1)) for g in grads]
            d_feats = d_feats * firsts[:, None, None]
        else:  # recompute with these weights
            with torch.no_grad():
                _, scaled, d_feats = _run_blocks(
                    rows, d_feats.shape[1], counts, list(weights), list(biases), targets, order, size, factor, eps,
                    block, grad_losses,
                )
        return (None, d_feats.view(ctx.feats_shape), None, None, None, None, None, None, None, *scaled)


def dynamic_mask_dice_loss(
    mask_feats: torch.Tensor,
    params: torch.Tensor,
    im_inds: torch.Tensor,
    locations: torch.Tensor,
    soi: torch.Tensor,
    layer_shapes: Sequence[Tuple[int, int]],
    targets: torch.Tensor,
    mask_feat_stride: int = 8,
    factor: int = 2,
    rel_coords: bool = True,
    eps: float = 1e-5,
    block: Optional[int] = None,
) -> torch.Tensor:
    """Per-instance dice losses of the dynamic mask heads' upsampled masks.

    Args:
        mask_feats, params, im_inds, locations, soi, layer_shapes, mask_feat_stride,
        rel_coords: as :func:`condseg.layers.dynamic_mask_heads`.
        targets: ``(N, 1, factor*H, factor*W)`` 0/1 masks at the mask output stride.
        factor: aligned upsampling factor (mask-feature stride / mask output stride).
        block: instances per block (default 8 on the CPU, 64 on GPUs).
    Returns:
        ``(N,)`` losses in the order of ``params``, differentiable w.r.t. ``mask_feats``
        and ``params``.
    """
    n = params.shape[0]
    h, w = mask_feats.shape[2:]
    if targets.shape != (n, 1, factor * h, factor * w):
        raise ValueError(f"expected targets of shape {(n, 1, factor * h, factor * w)}, got {tuple(targets.shape)}")
    if n == 0:  # empty, but attached to the graph of both inputs
        return params.new_zeros(0) + 0 * (params.sum() + mask_feats.sum())
    order, counts, rows, weights, biases = bmm_operands(
        mask_feats, params, im_inds, locations, soi, layer_shapes, mask_feat_stride, rel_coords
    )
    block = block or default_block(mask_feats.device)
    # the rows are [grid; features] (or the features): only the features need a gradient
    losses = _FusedDynamicMaskDice.apply(
        rows.detach(), mask_feats, targets, order, counts, (h, w), factor, eps, block, *weights, *biases
    )
    return losses[torch.argsort(order)]
