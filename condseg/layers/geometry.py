"""Coordinate grids and resampling shared by FCOS and CondInst.

Conventions: points are (x, y) in pixels of the padded network input; the point of
feature-map cell (row i, column j) at stride s is its centre
``(j * s + s // 2, i * s + s // 2)``; cells are flattened row-major.
"""
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


def _aligned_linear_1d(x: torch.Tensor, factor: int, dim: int) -> torch.Tensor:
    """Upsample one axis of length n to ``factor * n``: output q samples the input at
    ``max(q - factor // 2, 0) / factor``, clamped to n - 1 (linear interpolation)."""
    n = x.shape[dim]
    nxt = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim=dim)  # x[k + 1], clamped
    # phase r of cell k sits at position k + r / f: x[k] + (r / f) * (x[k + 1] - x[k]).
    # Stacked phases (rather than a broadcast over a phase axis) keep the backward elementwise.
    diff = nxt - x
    y = torch.stack([x] + [x + (r / factor) * diff for r in range(1, factor)], dim=dim + 1)
    y = y.flatten(dim, dim + 1)
    pad = factor // 2
    if pad == 0:
        return y
    head = x.narrow(dim, 0, 1).expand(*[pad if d == dim else -1 for d in range(x.dim())])
    return torch.cat([head, y.narrow(dim, 0, factor * n - pad)], dim=dim)


def aligned_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample ``(N, C, H, W)`` by an integer ``factor`` to ``(N, C, factor*H, factor*W)``.

    Output pixel (i, j) samples the input bilinearly at index position
    ``(max(i - factor // 2, 0) / factor, max(j - factor // 2, 0) / factor)``, clamped to
    the last row/column: the alignment CondInst uses so that stride-s maps line up with
    the image grid (cell centres at ``s * k + s // 2``). ``factor == 1`` returns ``x``.

    Computed as two separable 1-D interpolations built from shifted slices, which is
    exact and, unlike resampling through ``F.interpolate`` between replicate pads, has a
    cheap backward (no scatter).
    """
    assert x.dim() == 4, f"aligned_bilinear expects (N, C, H, W), got {tuple(x.shape)}"
    assert factor >= 1 and int(factor) == factor, f"factor must be a positive integer, got {factor}"
    factor = int(factor)
    if factor == 1:
        return x
    return _aligned_linear_1d(_aligned_linear_1d(x, factor, 2), factor, 3)


def _aligned_linear_1d_adjoint(grad: torch.Tensor, factor: int, dim: int) -> torch.Tensor:
    """Adjoint of :func:`_aligned_linear_1d`: length ``factor * n`` -> n along ``dim``.

    Forward, with ``pad = factor // 2`` and ``x[n] := x[n - 1]``: ``y[q] = x[0]`` for
    ``q < pad``, else ``y[q] = Y[q - pad]`` where
    ``Y[f k + r] = (1 - r / f) x[k] + (r / f) x[k + 1]``."""
    m = grad.shape[dim]
    n = m // factor
    pad = factor // 2
    g_y = grad.narrow(dim, pad, m - pad)  # the gradient of Y; zero for its last pad entries
    if pad:
        zeros = grad.new_zeros(()).expand(*[pad if d == dim else s for d, s in enumerate(grad.shape)])
        g_y = torch.cat([g_y, zeros], dim=dim)
    g_y = g_y.unflatten(dim, (n, factor))
    # weights (1 - r / f) on x[k] and r / f on x[k + 1]
    to_k = torch.add(g_y.select(dim + 1, 0), g_y.select(dim + 1, 1), alpha=1 - 1 / factor)
    to_next = g_y.select(dim + 1, 1) * (1 / factor)
    for r in range(2, factor):
        g_r = g_y.select(dim + 1, r)
        to_k.add_(g_r, alpha=1 - r / factor)
        to_next.add_(g_r, alpha=r / factor)
    to_k.narrow(dim, 1, n - 1).add_(to_next.narrow(dim, 0, n - 1))
    to_k.narrow(dim, n - 1, 1).add_(to_next.narrow(dim, n - 1, 1))  # x[n] is x[n - 1]
    if pad:
        to_k.narrow(dim, 0, 1).add_(grad.narrow(dim, 0, pad).sum(dim, keepdim=True))
    return to_k


def aligned_bilinear_adjoint(grad: torch.Tensor, factor: int) -> torch.Tensor:
    """The gradient w.r.t. the input of :func:`aligned_bilinear` (a linear map) given the
    gradient ``(N, C, factor*H, factor*W)`` w.r.t. its output: ``(N, C, H, W)``. Equal to
    autograd's, without building a graph (fused losses call it directly)."""
    factor = int(factor)
    if factor == 1:
        return grad
    return _aligned_linear_1d_adjoint(_aligned_linear_1d_adjoint(grad, factor, 3), factor, 2)
