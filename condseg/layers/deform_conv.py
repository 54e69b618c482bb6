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
* ``"grid_sample"``: :func:`~condseg.layers.deform_conv_grid_sample.deform_conv2d_grid_sample`,
  bilinear ``F.grid_sample`` of the deformed positions, then one matrix product.

``impl="auto"`` (the default) runs ``"torchvision"`` on CUDA and ``"grid_sample"`` on every
other device, where it is several times faster than torchvision's CPU kernels in training
and inference (docs/BENCHMARKS.md, "dcn").
"""
import inspect
from typing import Callable, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

from .deform_conv_grid_sample import deform_conv2d_grid_sample

__all__ = [
    "IMPLS",
    "DeformConv2d",
    "DeformConvWithOffset",
    "offset_predictor",
    "split_offset_mask",
]

_IntPair = Union[int, Tuple[int, int]]

#: The formulations :class:`DeformConv2d` can run (``impl`` also takes ``"auto"``).
IMPLS = ("torchvision", "grid_sample")


def _out_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _check_impl(impl: str) -> None:
    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"DeformConv2d impl must be 'auto' or one of {IMPLS}, got {impl!r}")


def _auto_impl(device: torch.device) -> str:
    """The dispatch rule of ``impl="auto"``: torchvision's kernels on CUDA (not measured
    against the alternative there), ``"grid_sample"`` everywhere else (faster on CPUs)."""
    return "torchvision" if device.type == "cuda" else "grid_sample"


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
    :func:`offset_predictor`, zero-initialised, with the conv's geometry) and ``conv`` (the
    :class:`DeformConv2d`, which owns ``norm``/``activation``). ``args`` / ``kwargs`` are
    :class:`DeformConv2d`'s.

    ``forward``: ``[N, C_in, H, W] -> [N, C_out, H_out, W_out]``.
    """

    def __init__(self, *args, modulated: bool = True, **kwargs):
        super().__init__()
        bound = inspect.signature(DeformConv2d).bind(*args, **kwargs)  # TypeError for wrong arguments
        bound.apply_defaults()
        a = bound.arguments
        self.modulated = modulated
        # the predictor first: its keys and random draws come before the conv's
        self.conv_offset = offset_predictor(
            a["in_channels"], a["kernel_size"], a["stride"], a["padding"], a["dilation"], a["deformable_groups"],
            modulated=modulated,
        )
        self.conv = DeformConv2d(*bound.args, **bound.kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = split_offset_mask(self.conv_offset(x), self.modulated)
        return self.conv(x, offset, mask)
