"""Coordinate grids and resampling shared by FCOS and CondInst.

Conventions: points are (x, y) in pixels of the padded network input; the point of
feature-map cell (row i, column j) at stride s is its centre
``(j * s + s // 2, i * s + s // 2)``; cells are flattened row-major.
"""
import torch

__all__ = ["compute_locations", "aligned_bilinear"]


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
