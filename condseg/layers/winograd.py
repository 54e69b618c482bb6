"""3x3 convolutions with per-sample kernels by Winograd's minimal filtering algorithm
F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).

The output is cut into ``m x m`` tiles; tile t of sample b reads an ``a x a`` input
patch ``d`` (``a = m + 2``, neighbouring patches overlap by 2) and is

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise, per channel pair)

summed over the input channels. In the transformed domain the channel sum is a matrix
product, one per transformed tap (``a^2`` of them) and sample:
``M[f, b] = U[f, b] @ V[f, b]`` with ``U [a^2, B, C_out, C_in]`` (the kernels) and
``V [a^2, B, C_in, tiles]`` (the input patches). The transforms are small fixed linear
maps (one matrix product each, with the Kronecker matrices ``B^T (x) B^T`` etc.), so
the multiply-adds of the channel sums drop from ``9 m^2`` to ``a^2`` per output tile and
channel pair: 2.25x fewer for F(2x2, 3x3), 3.24x for F(3x3, 3x3), 4x for F(4x4, 3x3).

The backward pass stays in the transformed domain too: ``dV = U^T dM`` and
``dU = dM V^T`` are the same batched products, then the transposed transforms
(and, for the input, the sum of the overlapping patches).

Only stride 1, dilation 1, one group; any zero padding. Exact in exact arithmetic. In
float32 the transformed values partly cancel in the output transform, so the rounding of
the channel sums weighs more than in a direct convolution, the more so for larger tiles
and for points of larger magnitude; with the points of :data:`POINTS` F(4x4, 3x3) stays
within 10x a direct convolution's float32 error at the ResNet-50 stage shapes
(``tests/layers/test_winograd.py``). The matrices are built from their points by
:func:`toom_cook`; ``tools/winograd_accuracy.py`` measures them (docs/BENCHMARKS.md).
"""
import math
from fractions import Fraction
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["winograd_conv3x3", "winograd_matrices", "toom_cook", "POINTS", "TILE_SIZES"]

TILE_SIZES = (2, 3, 4)

# The finite interpolation points of F(m x m, 3 x 3) (infinity is the last point of each):
# Lavin & Gray's for F(2x2); for F(3x3) and F(4x4) the most accurate in float32 among small
# fractions (tools/winograd_accuracy.py --search, docs/BENCHMARKS.md).
POINTS = {
    2: (0, 1, -1),
    3: (0, Fraction(2, 3), Fraction(3, 2), -1),
    4: (0, Fraction(3, 2), Fraction(-3, 2), Fraction(2, 3), Fraction(-2, 3)),
}


def toom_cook(points, m: int, r: int = 3) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B^T [a, a], G [a, r], A^T [m, a])``, float64, of the 1-D minimal filtering
    algorithm ``y = A^T [(G g) * (B^T d)]`` for ``y_j = sum_k g_k d_{j+k}``
    (``a = m + r - 1``), with the finite ``points`` and infinity.

    It is the transpose of Toom-Cook polynomial multiplication: with ``E_n`` the ``a x n``
    matrix evaluating a polynomial of degree ``n - 1`` at the points (row ``[1, p, p^2, ...]``,
    and for infinity the leading coefficient), the product of a degree ``r - 1`` and a
    degree ``m - 1`` polynomial is ``E_a^-1 ((E_r g) * (E_m h))``, so the correlation is
    ``E_m^T ((E_r g) * (E_a^-T d))``: ``A^T = E_m^T``, ``G = E_r``, ``B^T = E_a^-T``.
    """
    a = m + r - 1
    if len(points) != a - 1 or len(set(points)) != a - 1:
        raise ValueError(f"F({m}, {r}) needs {a - 1} distinct finite points, got {points}")

    def evaluation(n):
        rows = [[float(Fraction(p) ** j) for j in range(n)] for p in points] + [[0.0] * (n - 1) + [1.0]]
        return torch.tensor(rows, dtype=torch.float64)

    return torch.linalg.inv(evaluation(a)).t(), evaluation(r), evaluation(m).t()


_CACHE: Dict[tuple, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def winograd_matrices(m: int, dtype=torch.float32, device=None):
    """The 2-D transforms of F(m x m, 3 x 3) as Kronecker products, for tiles flattened
    row-major: ``(KB [a^2, a^2], KG [a^2, 9], KA [m^2, a^2])`` with ``V = KB d``,
    ``U = KG g``, ``Y = KA (U * V)`` (``a = m + 2``). Computed in float64, then cast."""
    if m not in POINTS:
        raise ValueError(f"Winograd tile size must be one of {TILE_SIZES}, got {m}")
    key = (m, dtype, torch.device(device) if device is not None else torch.device("cpu"))
    if key not in _CACHE:
        _CACHE[key] = tuple(torch.kron(t, t).to(dtype=dtype, device=key[2]) for t in toom_cook(POINTS[m], m))
    return _CACHE[key]


def _geometry(h: int, w: int, padding: Tuple[int, int], m: int):
    """Output size, tiles per axis, and the padded input size the tiles read."""
    ho, wo = h + 2 * padding[0] - 2, w + 2 * padding[1] - 2
    if ho < 1 or wo < 1:
        raise ValueError(f"3x3 convolution of a {h}x{w} input with padding {padding} has no output")
    ty, tx = math.ceil(ho / m), math.ceil(wo / m)
    return ho, wo, ty, tx, m * ty + 2, m * tx + 2


def _input_transform(x: torch.Tensor, padding, m: int, kb: torch.Tensor) -> torch.Tensor:
    """``x [B, C, H, W]`` -> ``V [a^2, B, C, tiles]``."""
    b, c, h, w = x.shape
    _, _, ty, tx, hp, wp = _geometry(h, w, padding, m)
    a = m + 2
    xp = F.pad(x, (padding[1], wp - w - padding[1], padding[0], hp - h - padding[0]))
    s = xp.stride()
    patches = xp.as_strided((a, a, b, c, ty, tx), (s[2], s[3], s[0], s[1], m * s[2], m * s[3]))
    return (kb @ patches.reshape(a * a, -1)).view(a * a, b, c, ty * tx)


def _input_transform_adjoint(dv: torch.Tensor, shape, padding, m: int, kb: torch.Tensor) -> torch.Tensor:
    """``dV [a^2, B, C, tiles]`` -> the gradient w.r.t. ``x`` (``shape``): the transposed
    transform, then each patch added back where it was read (patches overlap by 2)."""
    b, c, h, w = shape
    _, _, ty, tx, hp, wp = _geometry(h, w, padding, m)
    a = m + 2
    dd = (kb.t() @ dv.reshape(a * a, -1)).view(a, a, b, c, ty, tx)
    dxp = dv.new_empty(b, c, hp, wp)
    # rows/columns m*t + i for i < m belong to one patch each: one copy, then the overlaps
    dxp[:, :, : m * ty, : m * tx].view(b, c, ty, m, tx, m).copy_(dd[:m, :m].permute(2, 3, 4, 0, 5, 1))
    dxp[:, :, m * ty :].zero_()
    dxp[:, :, : m * ty, m * tx :].zero_()
    for i in range(a):
        for j in range(a):
            if i >= m or j >= m:
                dxp[:, :, i : i + m * ty : m, j : j + m * tx : m] += dd[i, j]
    return dxp[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w]


def _output_transform(mm: torch.Tensor, b: int, co: int, ty: int, tx: int, ho: int, wo: int, m: int, ka) -> torch.Tensor:
    """``M [a^2, B, C_out, tiles]`` -> ``y [B, C_out, H_out, W_out]``."""
    y = (ka @ mm.reshape(ka.shape[1], -1)).view(m, m, b, co, ty, tx)
    y = y.permute(2, 3, 4, 0, 5, 1).reshape(b, co, m * ty, m * tx)
    return y if (m * ty, m * tx) == (ho, wo) else y[:, :, :ho, :wo].contiguous()


def _output_transform_adjoint(dy: torch.Tensor, ty: int, tx: int, m: int, ka) -> torch.Tensor:
    """``dy [B, C_out, H_out, W_out]`` -> ``dM [a^2, B, C_out, tiles]``."""
    b, co, ho, wo = dy.shape
    dy = F.pad(dy, (0, m * tx - wo, 0, m * ty - ho))
    tiles = dy.view(b, co, ty, m, tx, m).permute(3, 5, 0, 1, 2, 4).reshape(m * m, -1)
    return (ka.t() @ tiles).view(-1, b, co, ty * tx)


CHUNK_BYTES = 16 * 2**20  # samples are transformed and multiplied a few at a time: V of a chunk <= this


def _chunk_size(x: torch.Tensor, padding, m: int) -> int:
    """Samples per chunk: as many as keep the chunk's transformed input ``V`` within
    :data:`CHUNK_BYTES` (at least one): transformed tiles that stay in cache beat one pass
    over the whole batch (docs/BENCHMARKS.md, "odconv")."""
    _, c, h, w = x.shape
    _, _, ty, tx, _, _ = _geometry(h, w, padding, m)
    per_sample = (m + 2) ** 2 * c * ty * tx * x.element_size()
    return max(1, CHUNK_BYTES // per_sample)


class _WinogradConv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, padding, m):
        b, ci, h, w = x.shape
        co = weight.shape[1]
        kb, kg, ka = winograd_matrices(m, x.dtype, x.device)
        ho, wo, ty, tx, _, _ = _geometry(h, w, padding, m)
        chunk = _chunk_size(x, padding, m)
        y = x.new_empty(b, co, ho, wo)
        saved = []
        for lo in range(0, b, chunk):
            xc, wc = x[lo : lo + chunk], weight[lo : lo + chunk]
            n = xc.shape[0]
            v = _input_transform(xc, padding, m, kb)  # [a^2, n, C_in, T]
            u = (kg @ wc.reshape(n * co * ci, 9).t()).view(-1, n, co, ci)  # [a^2, n, C_out, C_in]
            y[lo : lo + n] = _output_transform(torch.matmul(u, v), n, co, ty, tx, ho, wo, m, ka)
            saved += [u, v]
        ctx.save_for_backward(*saved)
        ctx.geometry = (x.shape, weight.shape, padding, m, ty, tx, chunk)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        saved = ctx.saved_tensors
        x_shape, w_shape, padding, m, ty, tx, chunk = ctx.geometry
        kb, kg, ka = winograd_matrices(m, dy.dtype, dy.device)
        dy = dy.contiguous()
        want_x, want_w = ctx.needs_input_grad[:2]
        dx = dy.new_empty(x_shape) if want_x else None
        dw = dy.new_empty(w_shape) if want_w else None
        for k, lo in enumerate(range(0, x_shape[0], chunk)):
            u, v = saved[2 * k], saved[2 * k + 1]
            n = u.shape[1]
            dm = _output_transform_adjoint(dy[lo : lo + n], ty, tx, m, ka)  # [a^2, n, C_out, T]
            if want_x:
                dv = torch.matmul(u.transpose(-1, -2), dm)  # [a^2, n, C_in, T]
                dx[lo : lo + n] = _input_transform_adjoint(dv, (n, *x_shape[1:]), padding, m, kb)
            if want_w:
                du = torch.matmul(dm, v.transpose(-1, -2))  # [a^2, n, C_out, C_in]
                dw[lo : lo + n] = (kg.t() @ du.reshape(du.shape[0], -1)).t().reshape(n, *w_shape[1:])
        return dx, dw, None, None


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, padding=1, tile: int = 4) -> torch.Tensor:
    """Per-sample 3x3 convolution (cross-correlation, as ``F.conv2d``), stride 1, dilation
    1, one group, by Winograd's F(tile x tile, 3 x 3).

    Args:
        x: ``[B, C_in, H, W]``.
        weight: ``[B, C_out, C_in, 3, 3]``, sample b's kernel (expand a shared one).
        padding: zero padding, an int or ``(pad_h, pad_w)``.
        tile: output tile size m, 2 or 4 (see the module docstring).
    Returns:
        ``[B, C_out, H + 2 pad_h - 2, W + 2 pad_w - 2]``; differentiable w.r.t. ``x`` and
        ``weight``.
    """
    padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
    if weight.dim() != 5 or weight.shape[0] != x.shape[0] or weight.shape[2] != x.shape[1] or weight.shape[3:] != (3, 3):
        raise ValueError(
            f"winograd_conv3x3: expected weight [B, C_out, {x.shape[1]}, 3, 3] with B = {x.shape[0]}, "
            f"got {tuple(weight.shape)}"
        )
    return _WinogradConv3x3.apply(x, weight.to(x.dtype), padding, tile)
