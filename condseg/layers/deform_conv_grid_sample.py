"""Deformable convolution as ``F.grid_sample`` + one matrix product: the formulation
``"grid_sample"`` of :class:`~condseg.layers.deform_conv.DeformConv2d`, with the arguments,
offset / mask layout and result of ``torchvision.ops.deform_conv2d``.

The ``K = kh * kw`` deformed positions of every output pixel form a ``grid_sample`` grid
``[N * G, K, H_out * W_out, 2]`` (the deformable groups folded into the batch);
``F.grid_sample`` (bilinear, zeros padding, ``align_corners=False``: pixel ``p`` <->
``(2 * p + 1) / size - 1``; its backward takes torchvision's side of the kinks at integer
positions, see :class:`_GridSampleRightAtKinks`) gives the columns ``[N * G, C_in / G, K, L]``,
exactly DCN's sampling: each of the 4 bilinear corners outside the image contributes 0.
They are multiplied by the mask, viewed as ``[N * groups, C_in / groups * K, L]`` (row
``c * K + t``) and contracted with the weight ``[groups, C_out / groups, C_in / groups * K]``
by one ``torch.bmm``; then bias. Autograd keeps the columns twice (before and after the
mask; once for DCNv1), i.e. ``2 * N * C_in * K * L`` values per layer (140 MB at
``[2, 256, 50, 76]``, float32).
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

__all__ = ["GRID_SAMPLE_MAX_ELEMENTS", "deform_conv2d_grid_sample"]

_IntPair = Union[int, Tuple[int, int]]

#: :func:`deform_conv2d_grid_sample` splits the batch so that one chunk's sampled columns
#: (``N * C_in * kh * kw * H_out * W_out`` elements) stay below this.
GRID_SAMPLE_MAX_ELEMENTS = 2**27


def _sampling_grid(
    offset: torch.Tensor,
    in_hw: Tuple[int, int],
    kernel_size: Tuple[int, int],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``grid_sample`` grid ``[N * G, K, L, 2]`` (``L = H_out * W_out``, last axis ``(x, y)``)
    of the deformed tap positions, from ``offset`` ``[N, 2 * G * K, H_out, W_out]``, and
    the same positions in pixels.

    A tap's pixel position is ``p = base + offset`` (the sum torchvision forms). With
    ``align_corners=False`` grid_sample maps a normalised ``u`` back to
    ``(u + 1) * s / 2 - 1 / 2`` on an axis of size ``s``, so ``p`` is
    ``u = (2 * p + 1) / s - 1`` (defined for ``s == 1``, unlike the ``align_corners=True``
    map); the round trip is off by up to about ``3 * s * eps / 2`` px (``eps``: the dtype's
    machine epsilon), either way.
    """
    (h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = in_hw, kernel_size, stride, padding, dilation
    n, channels, h_out, w_out = offset.shape
    taps, length = kh * kw, h_out * w_out
    like = {"dtype": offset.dtype, "device": offset.device}
    # pixel coordinates of the regular grid, tap t = i * kw + j, output position l = oy * W_out + ox
    py = torch.arange(kh, **like)[:, None, None] * dh + (torch.arange(h_out, **like) * sh - ph)[None, :, None]
    px = torch.arange(kw, **like)[:, None, None] * dw + (torch.arange(w_out, **like) * sw - pw)[None, None, :]
    py = py[:, None].expand(kh, kw, h_out, w_out).reshape(taps, length)
    px = px[None, :].expand(kh, kw, h_out, w_out).reshape(taps, length)
    # offset channel g * 2K + 2t is dy, g * 2K + 2t + 1 is dx
    off = offset.reshape(n * (channels // (2 * taps)), taps, 2, length)
    pos = torch.stack((px + off[:, :, 1], py + off[:, :, 0]), dim=-1)
    size = torch.tensor([w, h], **like)
    return pos * (2 / size) + (1 / size - 1), pos


class _GridSampleRightAtKinks(torch.autograd.Function):
    """``F.grid_sample`` (bilinear, zeros, ``align_corners=False``) whose backward reads
    ``lifted``, the grid with the taps at integer positions raised by ``6 * eps``.

    Bilinear sampling has a kink at an integer position ``p``; torchvision's offset
    gradient there is the difference towards the next pixel (corners ``p`` and ``p + 1``).
    The grid's round trip can land just below ``p`` and take the difference on the other
    side (every tap of the zero offsets a DCN layer starts with is at an integer). Lifted,
    it lands above ``p`` by less than ``5 * s * eps`` px: torchvision's side, while the
    forward keeps the grid's own values (the input gradient of such a tap moves by that
    fraction of a pixel).
    """

    @staticmethod
    def forward(ctx, x, grid, lifted):
        ctx.save_for_backward(x, lifted)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, lifted = ctx.saved_tensors
        # interpolation mode 0: bilinear, padding mode 0: zeros
        dx, dgrid = torch.ops.aten.grid_sampler_2d_backward(
            grad.contiguous(), x, lifted, 0, 0, False, [ctx.needs_input_grad[0], ctx.needs_input_grad[1]]
        )
        return dx, dgrid, None


def _grid_sample(x: torch.Tensor, grid: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Bilinear ``grid_sample`` of ``x`` with zeros outside, at ``grid`` (pixel positions
    ``pos``), with torchvision's gradient at integer positions."""
    if not torch.is_grad_enabled() or not (x.requires_grad or grid.requires_grad):
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lift = 6 * torch.finfo(grid.dtype).eps
    lifted = grid.detach() + (pos == pos.floor()) * lift
    return _GridSampleRightAtKinks.apply(x, grid, lifted)


def _dense_grad(grad: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if grad is None else grad.contiguous()


def _deform_conv2d_grid_sample(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
    mask: Optional[torch.Tensor],
) -> torch.Tensor:
    n, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups, taps = c_in // c_per_group, kh * kw
    dgroups = offset.shape[1] // (2 * taps)
    h_out, w_out = offset.shape[2:]
    length = h_out * w_out
    grid, pos = _sampling_grid(offset, (h, w), (kh, kw), stride, padding, dilation)
    # deformable groups fold into the batch: [N * G, C_in / G, H, W]
    x = x.reshape(n * dgroups, c_in // dgroups, h, w)
    # bilinear, and a corner outside the image contributes 0 (padding_mode="zeros"), as in DCN
    cols = _grid_sample(x, grid, pos.detach())
    if mask is not None:  # [N * G, C_in / G, K, L] * [N * G, 1, K, L]
        cols = cols * mask.reshape(n * dgroups, 1, taps, length)
    # row c * K + t of the columns meets weight[:, c, i, j] (t = i * kw + j). An explicit bmm:
    # torch.matmul of a 2-D weight and 3-D columns would copy the columns to fold the batch.
    cols = cols.reshape(n * groups, c_per_group * taps, length)
    w_mat = weight.reshape(1, groups, c_out // groups, c_per_group * taps).expand(n, -1, -1, -1)
    y = torch.bmm(w_mat.reshape(n * groups, c_out // groups, c_per_group * taps), cols)
    if y.requires_grad:
        # an expanded gradient (that of y.sum(), say) sends the backward bmm's down a far slower
        # path (docs/BENCHMARKS.md, "dcn")
        y.register_hook(_dense_grad)
    y = y.reshape(n, c_out, h_out, w_out)
    return y if bias is None else y + bias.reshape(1, c_out, 1, 1)


def deform_conv2d_grid_sample(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: _IntPair = 1,
    padding: _IntPair = 0,
    dilation: _IntPair = 1,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Same arguments, layout and result as ``torchvision.ops.deform_conv2d``, computed as
    ``F.grid_sample`` (bilinear, zeros outside) of the ``kh * kw`` deformed positions, times
    the mask, then one matrix product with ``weight`` ``[C_out, C_in / groups * kh * kw]``.
    Shapes are not checked here (:class:`DeformConv2d` checks them); ``offset``, ``mask``
    and ``x`` must share a dtype. The normalised grid costs up to about ``1.5 * size * eps``
    pixels of position error against torchvision (``size * 1.8e-7`` in float32); the
    offset gradients at integer positions take torchvision's side of the kink.

    The batch is processed in chunks of at most :data:`GRID_SAMPLE_MAX_ELEMENTS` sampled
    values (under autograd every chunk's columns are still kept for backward). Half
    precision inputs are computed in float32 and the result cast back.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    out_dtype = x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):
        x, offset, weight = x.float(), offset.float(), weight.float()
        bias = None if bias is None else bias.float()
        mask = None if mask is None else mask.float()
    n = x.shape[0]
    per_sample = x.shape[1] * weight.shape[2] * weight.shape[3] * offset.shape[2] * offset.shape[3]
    chunk = max(1, GRID_SAMPLE_MAX_ELEMENTS // max(per_sample, 1))
    if n <= chunk:
        y = _deform_conv2d_grid_sample(x, offset, weight, bias, stride, padding, dilation, mask)
    else:
        masks = [None] * n if mask is None else mask.split(chunk)
        y = torch.cat([
            _deform_conv2d_grid_sample(xc, oc, weight, bias, stride, padding, dilation, mc)
            for xc, oc, mc in zip(x.split(chunk), offset.split(chunk), masks)
        ])
    return y.to(out_dtype)
