"""Deformable convolution (DCNv1, Dai et al. 2017; DCNv2, Zhu et al. 2019), as
``torchvision.ops.deform_conv2d`` or as ``F.grid_sample`` + one matrix product.

For output position ``p`` and kernel tap ``k`` (regular grid offset ``p_k``) the layer
computes ``y(p) = sum_k w_k * m_k(p) * x(p * stride - padding + p_k * dilation + dp_k(p))``
where ``x(.)`` is bilinear interpolation with zeros outside the image, ``dp_k`` a
learned (dy, dx) offset and ``m_k`` a modulation scalar in [0, 1] (DCNv2; DCNv1 has no
mask, i.e. ``m_k = 1``).

Offset / mask channel layout (torchvision's, also that of detectron2's compiled ops).
With ``G`` deformable groups, a ``kh x kw`` kernel, ``K = kh * kw`` and tap
``t = i * kw + j`` (row ``i``, column ``j`` of the kernel):

* ``offset``: ``[N, 2 * G * K, H_out, W_out]``; channel ``g * 2 * K + 2 * t`` is the
  vertical offset ``dy`` and channel ``g * 2 * K + 2 * t + 1`` the horizontal offset
  ``dx`` (in input pixels) of tap ``t`` for deformable group ``g``;
* ``mask``: ``[N, G * K, H_out, W_out]``; channel ``g * K + t``.

Deformable group ``g`` covers input channels ``[g * C_in / G, (g + 1) * C_in / G)``.

The offset predictor (:func:`offset_predictor`) outputs ``3 * G * K`` channels for DCNv2:
the first ``2 * G * K`` are the offsets in the layout above and the last ``G * K`` are
mask logits (:func:`split_offset_mask`), as in detectron2's ``DeformBottleneckBlock``,
so its ``conv2_offset`` weights load unchanged.

Formulations (``impl``, :data:`IMPLS`; same outputs and gradients up to float rounding):

* ``"torchvision"``: ``torchvision.ops.deform_conv2d``, the reference (and the CUDA path).
* ``"grid_sample"`` (:func:`deform_conv2d_grid_sample`): the ``K`` deformed positions of
  every output pixel, as a ``grid_sample`` grid ``[N * G, K, H_out * W_out, 2]`` (the
  deformable groups folded into the batch); ``F.grid_sample`` (bilinear, zeros padding,
  ``align_corners=False``: pixel ``p`` <-> ``(2 * p + 1) / size - 1``; its backward takes
  torchvision's side of the kinks at integer positions, see :class:`_GridSampleRightAtKinks`)
  gives the columns ``[N * G, C_in / G, K, L]``, exactly DCN's sampling: each of the 4
  bilinear corners outside the image contributes 0. They are multiplied by the mask, viewed as
  ``[N * groups, C_in / groups * K, L]`` (row ``c * K + t``) and contracted with the
  weight ``[groups, C_out / groups, C_in / groups * K]`` by one ``torch.bmm``; then bias.
  Autograd keeps the columns twice (before and after the mask; once for DCNv1), i.e.
  ``2 * N * C_in * K * L`` values per layer (140 MB at ``[2, 256, 50, 76]``, float32).

``impl="auto"`` (the default) runs ``"torchvision"`` on CUDA (its kernels there were not
re-measured; no GPU here) and ``"grid_sample"`` on every other device: on this 2-core
AVX-512 CPU (torch 2.14, torchvision 0.29) it was faster than torchvision's CPU kernels at
every shape measured, training and inference (1.5x to 13x). DCNv2 3x3, ``C -> C``, padding
1, offsets ~ N(0, 1) px; ms, median of 11 runs (5 for batch 2) interleaved in one process,
quiet machine; ``conv`` is the plain 3x3 convolution of the same shape::

    input               forward + backward              forward only (no_grad)
                        torchvision  grid_sample  conv  torchvision  grid_sample  conv
    [2, 256, 50, 76]        2324        569       137       307         174        41
    [8, 64, 40, 40]          930        128        24       100          16         5
    [8, 128, 20, 20]         435         58        15        50          11         5
    [8, 256, 10, 10]         218         32        14        26          11         5

Same protocol, torchvision / grid_sample, forward + backward and forward only:
``[1, 512, 25, 38]`` 594 / 190 and 86 / 49, ``[1, 512, 7, 7]`` 33 / 9.5 and 5.1 / 3.5,
``[2, 64, 200, 304]`` 9111 / 1157 and 1325 / 512, ``[2, 256, 50, 76]`` with ``G = 8``
2439 / 469 and 311 / 119, ``[8, 64, 40, 40]`` with ``groups = 32`` 916 / 70 and 99 / 17.
With a CondInst training run sharing the 2 cores, the table's forward + backward rows
read 2872 / 1143, 1139 / 353, 632 / 188 and 416 / 145 and its forward-only first row
426 / 413 (the only near tie). The CondInst quickstart
(``configs/quickstart/condinst_R18_dcnv2_shapes.yaml``: DCNv2 in res3-res5, batch 8)
takes 1.18 s per forward + backward of one batch (no data loading, no optimizer step)
with ``"grid_sample"`` against 4.27 s with torchvision (median of 5, interleaved).
"""
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = [
    "IMPLS",
    "DeformConv2d",
    "DeformConvWithOffset",
    "deform_conv2d_grid_sample",
    "offset_predictor",
    "split_offset_mask",
]

_IntPair = Union[int, Tuple[int, int]]

#: The formulations :class:`DeformConv2d` can run (``impl`` also takes ``"auto"``).
IMPLS = ("torchvision", "grid_sample")

#: ``"grid_sample"`` splits the batch so that one chunk's sampled columns
#: (``N * C_in * kh * kw * H_out * W_out`` elements) stay below this.
GRID_SAMPLE_MAX_ELEMENTS = 2**27


def _out_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _check_impl(impl: str) -> None:
    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"DeformConv2d impl must be 'auto' or one of {IMPLS}, got {impl!r}")


def _auto_impl(device: torch.device) -> str:
    """The dispatch rule of ``impl="auto"`` (measurements in the module docstring):
    torchvision's kernels on CUDA, ``"grid_sample"`` everywhere else."""
    return "torchvision" if device.type == "cuda" else "grid_sample"


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
        # an expanded gradient (that of y.sum(), say) makes the backward bmm's take a path that
        # ran 100x slower here (seconds at [8, 64, 40, 40], groups 32) on a busy CPU
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


class DeformConv2d(nn.Module):
    """Deformable convolution layer; modulated (DCNv2) when ``forward`` gets a mask.

    Args mirror ``nn.Conv2d`` plus ``deformable_groups`` (``G``: the input channels are
    split into ``G`` groups, each with its own offsets/mask). ``norm`` (stored as the
    submodule ``norm``) and then ``activation`` are applied after the convolution, as in
    detectron2's ``Conv2d``. ``impl``: ``"auto"`` or one of :data:`IMPLS` (see the module
    docstring); it can be changed on a built layer (``layer.impl = ...``), it holds no state.

    Parameters: ``weight`` ``[C_out, C_in / groups, kh, kw]``; ``bias`` ``[C_out]`` or None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntPair,
        stride: _IntPair = 1,
        padding: _IntPair = 0,
        dilation: _IntPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
        norm: Optional[nn.Module] = None,
        activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        impl: str = "auto",
    ):
        super().__init__()
        _check_impl(impl)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels {in_channels} and out_channels {out_channels} must be divisible by groups {groups}"
            )
        if in_channels % deformable_groups:
            raise ValueError(f"in_channels {in_channels} must be divisible by deformable_groups {deformable_groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.norm = norm
        self.activation = activation
        self.impl = impl
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def resolved_impl(self, x: torch.Tensor) -> str:
        """The formulation ``forward`` runs for input ``x``: ``self.impl``, or for ``"auto"``
        the dispatch rule (torchvision on CUDA, ``"grid_sample"`` elsewhere)."""
        _check_impl(self.impl)  # it may have been reassigned since __init__
        return self.impl if self.impl != "auto" else _auto_impl(x.device)

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """Spatial size ``(H_out, W_out)`` of the output (and of offset/mask) for an input ``H x W``."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return _out_size(height, kh, sh, ph, dh), _out_size(width, kw, sw, pw, dw)

    def _check(self, name: str, t: torch.Tensor, channels: int, n: int, out_hw: Tuple[int, int]) -> None:
        expected = (n, channels, *out_hw)
        if tuple(t.shape) != expected:
            raise ValueError(
                f"DeformConv2d: {name} must have shape [N, {channels}, H_out, W_out] = {list(expected)} "
                f"(deformable_groups={self.deformable_groups}, kernel_size={self.kernel_size}), got {list(t.shape)}"
            )

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: ``[N, C_in, H, W]``.
            offset: ``[N, 2 * G * kh * kw, H_out, W_out]`` (layout in the module docstring).
            mask: ``[N, G * kh * kw, H_out, W_out]`` modulation, or None for DCNv1.

        Returns:
            ``[N, C_out, H_out, W_out]``.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DeformConv2d: x must have shape [N, {self.in_channels}, H, W], got {list(x.shape)}")
        taps = self.deformable_groups * self.kernel_size[0] * self.kernel_size[1]
        out_hw = self.output_size(x.shape[2], x.shape[3])
        self._check("offset", offset, 2 * taps, x.shape[0], out_hw)
        if mask is not None:
            self._check("mask", mask, taps, x.shape[0], out_hw)
        op = deform_conv2d if self.resolved_impl(x) == "torchvision" else deform_conv2d_grid_sample
        y = op(
            x, offset, self.weight, self.bias,
            stride=self.stride, padding=self.padding, dilation=self.dilation, mask=mask,
        )
        if self.norm is not None:
            y = self.norm(y)
        if self.activation is not None:
            y = self.activation(y)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}, impl={self.impl}"
        )


def offset_predictor(
    in_channels: int,
    kernel_size: _IntPair,
    stride: _IntPair = 1,
    padding: _IntPair = 0,
    dilation: _IntPair = 1,
    deformable_groups: int = 1,
    modulated: bool = True,
) -> nn.Conv2d:
    """Plain conv predicting offsets (and mask logits) for a :class:`DeformConv2d` with the
    same ``kernel_size``/``stride``/``padding``/``dilation``, so its output has the deformable
    conv's output size.

    Output channels: ``3 * G * kh * kw`` if ``modulated`` (offsets then mask logits; see
    :func:`split_offset_mask`), else ``2 * G * kh * kw`` (the offsets themselves).
    Weight and bias are zero, so a fresh predictor gives zero offsets (the regular grid)
    and, after the sigmoid, modulation 0.5.
    """
    kh, kw = _pair(kernel_size)
    per_tap = 3 if modulated else 2
    conv = nn.Conv2d(
        in_channels, deformable_groups * per_tap * kh * kw, (kh, kw), stride=stride, padding=padding, dilation=dilation
    )
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def split_offset_mask(
    offset_mask: torch.Tensor, modulated: bool = True
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Split an :func:`offset_predictor` output into the ``(offset, mask)`` that
    :meth:`DeformConv2d.forward` takes.

    Modulated: ``offset_mask`` ``[N, 3 * G * K, H_out, W_out]``; ``offset`` = channels
    ``[0, 2 * G * K)`` (``[N, 2 * G * K, H_out, W_out]``) and ``mask`` = ``sigmoid`` of
    channels ``[2 * G * K, 3 * G * K)`` (``[N, G * K, H_out, W_out]``).
    Unmodulated: ``offset_mask`` is the offset itself and ``mask`` is None.
    """
    if not modulated:
        return offset_mask, None
    if offset_mask.dim() != 4 or offset_mask.shape[1] % 3:
        raise ValueError(f"split_offset_mask: expected [N, 3 * G * K, H, W], got {list(offset_mask.shape)}")
    c = offset_mask.shape[1] // 3
    offset, logits = offset_mask.split([2 * c, c], dim=1)
    return offset, logits.sigmoid()


class DeformConvWithOffset(nn.Module):
    """Offset predictor + :class:`DeformConv2d` on the same input: DCNv2 if ``modulated``,
    else DCNv1 (same op, no mask). Submodules: ``conv_offset`` (the ``nn.Conv2d`` from
    :func:`offset_predictor`, zero-initialised) and ``conv`` (the :class:`DeformConv2d`,
    which owns ``norm``/``activation``). Arguments as :class:`DeformConv2d`.

    ``forward``: ``[N, C_in, H, W] -> [N, C_out, H_out, W_out]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntPair,
        stride: _IntPair = 1,
        padding: _IntPair = 0,
        dilation: _IntPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
        norm: Optional[nn.Module] = None,
        activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        modulated: bool = True,
        impl: str = "auto",
    ):
        super().__init__()
        self.modulated = modulated
        self.conv_offset = offset_predictor(
            in_channels, kernel_size, stride, padding, dilation, deformable_groups, modulated=modulated
        )
        self.conv = DeformConv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups, deformable_groups, bias, norm, activation, impl,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = split_offset_mask(self.conv_offset(x), self.modulated)
        return self.conv(x, offset, mask)
