"""Coordinate grids and resampling shared by FCOS and CondInst.

Conventions: points are (x, y) in pixels of the padded network input; the point of
feature-map cell (row i, column j) at stride s is its centre
``(j * s + s // 2, i * s + s // 2)``; cells are flattened row-major.
"""
import torch
import torch.nn.functional as F

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


def aligned_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample ``(N, C, H, W)`` by an integer ``factor`` to ``(N, C, factor*H, factor*W)``.

    Output pixel (i, j) samples the input bilinearly at index position
    ``(max(i - factor // 2, 0) / factor, max(j - factor // 2, 0) / factor)``, clamped to
    the last row/column: the alignment CondInst uses so that stride-s maps line up with
    the image grid (cell centres at ``s * k + s // 2``). ``factor == 1`` returns ``x``.
    """
    assert x.dim() == 4, f"aligned_bilinear expects (N, C, H, W), got {tuple(x.shape)}"
    assert factor >= 1 and int(factor) == factor, f"factor must be a positive integer, got {factor}"
    factor = int(factor)
    if factor == 1:
        return x
    h, w = x.shape[2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    pad = factor // 2
    x = F.pad(x, (pad, 0, pad, 0), mode="replicate")
    return x[:, :, : factor * h, : factor * w]
