"""Coordinate grids and resampling shared by FCOS and CondInst.

Conventions: points are (x, y) in pixels of the padded network input; the point of
feature-map cell (row i, column j) at stride s is its centre
``(j * s + s // 2, i * s + s // 2)``; cells are flattened row-major.
"""
from typing import Tuple

import torch

__all__ = ["compute_locations", "aligned_bilinear", "aligned_bilinear_adjoint"]


def compute_locations(height: int, width: int, stride: int, device=None) -> torch.Tensor:
    """Pixel centres of a feature map's cells.

    Returns:
        float32 ``(height * width, 2)``: row ``i * width + j`` is
        ``(j * stride + stride // 2, i * stride + stride // 2)``.
    """
    xs = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
    ys = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=1) + stride // 2


def _phase_weight(s: int, factor: int) -> Tuple[int, float]:
    """Output phase ``s`` (output index ``q = factor * j + s``) of the 1-D aligned
    upsampling reads ``(1 - t) x[j + shift] + t x[j + shift + 1]``: returns
    ``(shift, t)`` with shift 0 or -1 (see :func:`_aligned_linear_1d`)."""
    pad = factor // 2
    return (0, (s - pad) / factor) if s >= pad else (-1, (s - pad + factor) / factor)


def _aligned_linear_1d(x: torch.Tensor, factor: int, dim: int, out=None) -> torch.Tensor:
    """Upsample one axis of length n to ``factor * n``: output q samples the input at
    ``max(q - factor // 2, 0) / factor``, clamped to n - 1 (linear interpolation).

    Written phase by phase into the output, one pass: phase s of output cell j
    (``q = factor * j + s``) is ``lerp(x[j + shift], x[j + shift + 1], t)`` with
    :func:`_phase_weight`, where ``x[n] := x[n - 1]`` and, for ``shift = -1``, cell 0 is ``x[0]``.
    ``out``: a contiguous tensor of the output's shape to write into (else a new one)."""
    n = x.shape[dim]
    shape = list(x.shape)
    shape[dim] = factor * n
    if out is None:
        out = x.new_empty(shape)
    else:
        assert list(out.shape) == shape and out.is_contiguous(), (tuple(out.shape), shape)
    phases = out.unflatten(dim, (n, factor))
    first, last = x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1)
    for s in range(factor):
        shift, t = _phase_weight(s, factor)
        dst = phases.select(dim + 1, s)
        if t == 0:
            dst.copy_(x)
        elif shift == 0:
            torch.lerp(first, last, t, out=dst.narrow(dim, 0, n - 1))
            dst.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 1, 1))
        else:
            torch.lerp(first, last, t, out=dst.narrow(dim, 1, n - 1))
            dst.narrow(dim, 0, 1).copy_(x.narrow(dim, 0, 1))
    return out


def _aligned_linear_1d_adjoint(grad: torch.Tensor, factor: int, dim: int) -> torch.Tensor:
    """Adjoint of :func:`_aligned_linear_1d`: length ``factor * n`` -> n along ``dim``,
    phase by phase (each phase's gradient goes to the two cells it read)."""
    n = grad.shape[dim] // factor
    phases = grad.unflatten(dim, (n, factor))
    pad = factor // 2
    out = phases.select(dim + 1, pad).clone()  # phase pad reads x[j] with weight 1
    for s in range(factor):
        shift, t = _phase_weight(s, factor)
        if s == pad:
            continue
        g = phases.select(dim + 1, s)
        if shift == 0:  # (1 - t) -> x[j], t -> x[j + 1] (x[n] is x[n - 1])
            out.add_(g, alpha=1 - t)
            out.narrow(dim, 1, n - 1).add_(g.narrow(dim, 0, n - 1), alpha=t)
            out.narrow(dim, n - 1, 1).add_(g.narrow(dim, n - 1, 1), alpha=t)
        else:  # cell 0 is x[0]; cell j >= 1: (1 - t) -> x[j - 1], t -> x[j]
            out.narrow(dim, 0, n - 1).add_(g.narrow(dim, 1, n - 1), alpha=1 - t)
            out.narrow(dim, 1, n - 1).add_(g.narrow(dim, 1, n - 1), alpha=t)
            out.narrow(dim, 0, 1).add_(g.narrow(dim, 0, 1))
    return out


def _upsample(x: torch.Tensor, factor: int, rows=None, out=None) -> torch.Tensor:
    """Both axes; ``rows`` / ``out``: contiguous tensors to write the rows' pass
    ``(N, C, factor*H, W)`` and the output into (else new ones)."""
    return _aligned_linear_1d(_aligned_linear_1d(x, factor, 2, rows), factor, 3, out)


def aligned_bilinear_adjoint(grad: torch.Tensor, factor: int) -> torch.Tensor:
    """The gradient w.r.t. the input of :func:`aligned_bilinear` (a linear map) given the
    gradient ``(N, C, factor*H, factor*W)`` w.r.t. its output: ``(N, C, H, W)``. Its
    backward; fused losses call it directly, without building a graph."""
    factor = int(factor)
    if factor == 1:
        return grad
    return _aligned_linear_1d_adjoint(_aligned_linear_1d_adjoint(grad, factor, 3), factor, 2)


class _AlignedBilinear(torch.autograd.Function):
    """The upsampling (``adjoint=False``) or its adjoint (``adjoint=True``): linear maps,
    so each one's backward is the other, itself differentiable."""

    @staticmethod
    def forward(ctx, x, factor, adjoint):
        ctx.factor, ctx.adjoint = factor, adjoint
        return aligned_bilinear_adjoint(x, factor) if adjoint else _upsample(x, factor)

    @staticmethod
    def backward(ctx, grad):
        return _AlignedBilinear.apply(grad.contiguous(), ctx.factor, not ctx.adjoint), None, None


def aligned_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample ``(N, C, H, W)`` by an integer ``factor`` to ``(N, C, factor*H, factor*W)``.

    Output pixel (i, j) samples the input bilinearly at index position
    ``(max(i - factor // 2, 0) / factor, max(j - factor // 2, 0) / factor)``, clamped to
    the last row/column: the alignment CondInst uses so that stride-s maps line up with
    the image grid (cell centres at ``s * k + s // 2``). ``factor == 1`` returns ``x``.

    Computed as two separable 1-D interpolations, each written phase by phase into its
    output in one pass; the backward is the explicit adjoint
    (:func:`aligned_bilinear_adjoint`), also one pass per axis and without scatter.
    """
    assert x.dim() == 4, f"aligned_bilinear expects (N, C, H, W), got {tuple(x.shape)}"
    assert factor >= 1 and int(factor) == factor, f"factor must be a positive integer, got {factor}"
    factor = int(factor)
    if factor == 1:
        return x
    return _AlignedBilinear.apply(x, factor, False)
