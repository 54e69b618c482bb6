"""The formulations of :class:`~condseg.layers.odconv.ODConv2d`'s forward and the rule
``impl="auto"`` picks them by. All give the same outputs and gradients, up to float rounding.

With the attentions ``a_c [B, C_in]``, ``a_f [B, C_out]``, ``a_s [B, k, k]``, ``a_w [B, n]``
(:class:`~condseg.layers.odconv_attention.ODAttention`) and the n kernels
``weight [n, C_out, C_in/G, k, k]``, every one computes
``y_b = a_f[b] * conv(a_c[b] * x_b, a_s[b] * sum_m a_w[b, m] * weight[m])``:

* ``"batch_groups"``: the published one, kept as the baseline. The per-sample kernel is
  aggregated through a broadcast product ``a_s * a_w * weight`` of shape
  ``[B, n, C_out, C_in/G, k, k]`` summed over n; ``x * a_c`` with the batch folded into
  the groups of one convolution (``[1, B*C_in, H, W]``, ``groups = B*G``); then ``* a_f``.
* ``"grouped"``: the same convolution, but the kernels are aggregated by one matrix
  product ``a_w @ weight.view(n, -1)`` (times ``a_s``, :func:`aggregate`), never
  materialising the ``[B, n, ...]`` product, and ``a_c`` / ``a_f`` are folded into the
  per-sample kernels instead of scaling the features when the kernels are the smaller
  tensor (:func:`fold_is_cheaper`).
* ``"per_sample"``: the same kernels and folding, then one ordinary convolution per sample.
* ``"unfold_bmm"``: the same kernels and folding; im2col (``F.unfold``, or the strided
  pixels for 1x1) of the whole batch, then one batched matrix product
  ``[B, G, C_out/G, C_in/G*k*k] @ [B, G, C_in/G*k*k, L]``.
* ``"winograd"``: only for 3x3, stride 1, dilation 1, one group: the same kernels and
  folding, convolved by Winograd's F(m x m, 3x3) (the layer's ``winograd_tile`` m,
  :data:`WINOGRAD_TILE` by default; :mod:`condseg.layers.winograd`): per sample,
  ``(m + 2)**2`` matrix products over transformed tiles replace the convolution's channel
  sums (4x fewer multiply-adds for m = 4), then the transforms' adjoints in the backward.
* ``"pointwise"``: only for a kernel shared by all samples (no spatial and no kernel
  head: k == 1 and n == 1 for ODConv): one batched convolution with ``weight[0]`` between
  ``* a_c`` and ``* a_f``, the official fast path.

Every formulation is ``FORWARDS[impl](layer, x, att, fold=None)`` -> ``[B, C_out, H_out, W_out]``
(without the layer's bias, norm and activation); ``fold`` forces the choice of
:func:`fold_is_cheaper` (None: the rule), for the formulations that fold.

:func:`auto_impl` is the dispatch rule; the measurements behind its thresholds are in
docs/BENCHMARKS.md ("odconv").
"""
import math
from typing import Dict, Iterable, Optional

import torch
import torch.nn.functional as F

from .winograd import winograd_conv3x3

__all__ = [
    "FORWARDS",
    "IMPLS",
    "PER_SAMPLE_MIN_MACS",
    "WINOGRAD_INFER_MIN_CHANNELS",
    "WINOGRAD_INFER_MIN_TILES",
    "WINOGRAD_MIN_CHANNELS",
    "WINOGRAD_MIN_TILES",
    "WINOGRAD_TILE",
    "aggregate",
    "aggregate_broadcast",
    "auto_impl",
    "check_impl",
    "fold_is_cheaper",
    "impls_for",
    "out_size",
]

IMPLS = ("batch_groups", "grouped", "per_sample", "unfold_bmm", "winograd", "pointwise")

# F(4x4, 3x3): within 10x a direct convolution's float32 error with winograd.POINTS, and the
# fastest tile (accuracy and time of the tiles: docs/BENCHMARKS.md, "Which tile")
WINOGRAD_TILE = 4

# "auto" thresholds; why these values: docs/BENCHMARKS.md, "odconv", the dispatch rule
PER_SAMPLE_MIN_MACS = 2**25  # one convolution call per sample pays from this size of one sample's conv
WINOGRAD_MIN_CHANNELS = 128  # Winograd pays when the channel products are large...
WINOGRAD_MIN_TILES = 64  # ...and enough 4x4 output tiles amortise the per-sample kernel transform
# without a backward (inference, frozen layers) Winograd's gain is smaller and the direct
# formulations' is surer: Winograd only with wide channels and many tiles in the whole batch
WINOGRAD_INFER_MIN_CHANNELS = 256
WINOGRAD_INFER_MIN_TILES = 1024


def check_impl(impl: str) -> None:
    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"ODConv impl must be 'auto' or one of {IMPLS}, got {impl!r}")


def out_size(size: int, i: int, layer) -> int:
    """The output size along axis ``i`` (0: height, 1: width) of ``layer`` for an input ``size``."""
    k, s, p, d = layer.kernel_size, layer.stride[i], layer.padding[i], layer.dilation[i]
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _scale(t: torch.Tensor, a: Optional[torch.Tensor]) -> torch.Tensor:
    """``t [B, C, H, W] * a [B, C]`` per channel; ``t`` when ``a`` is None."""
    return t if a is None else t * a.to(t.dtype)[:, :, None, None]


def _block_length(p: int, most: int = 64) -> int:
    """The largest divisor of ``p`` that is at most ``most``."""
    return next(d for d in range(min(most, p), 0, -1) if p % d == 0)


class _MixKernels(torch.autograd.Function):
    """``a [B, n] @ weight.view(n, -1)``: the per-sample mix of the n kernels
    ``weight [n, ...]``, ``[B, P]`` with ``P = C_out * C_in/G * k * k``.

    Its gradient w.r.t. ``a`` is a sum over the ``P`` kernel entries (589,824 for a
    256-channel 3x3 layer). As one matrix product it accumulates in long runs and is less
    accurate in float32 than the published broadcast-and-sum (docs/BENCHMARKS.md); here it
    is a batched product over blocks of at most 64 entries, whose partial sums ``torch.sum``
    adds up pairwise: as accurate as the published one, at the cost of one matrix product."""

    @staticmethod
    def forward(ctx, a, weight):
        ctx.save_for_backward(a, weight)
        return a @ weight.reshape(weight.shape[0], -1)

    @staticmethod
    def backward(ctx, grad):
        a, weight = ctx.saved_tensors
        n, b = weight.shape[0], a.shape[0]
        grad_a = grad_w = None
        if ctx.needs_input_grad[0]:
            length = _block_length(grad.shape[1])
            # [K, B, L] @ [K, L, n] -> [K, B, n] over the K blocks of L entries, then their sum
            blocks = torch.bmm(grad.reshape(b, -1, length).transpose(0, 1),
                               weight.reshape(n, -1, length).permute(1, 2, 0))
            grad_a = blocks.sum(0)
        if ctx.needs_input_grad[1]:
            grad_w = (a.t() @ grad).view(weight.shape)
        return grad_a, grad_w


def aggregate(weight: torch.Tensor, att: Dict[str, torch.Tensor], groups: int, fold_features: bool = False) -> torch.Tensor:
    """``a_s * sum_m a_w[m] * weight[m]`` by one matrix product over the n kernels, and
    with ``fold_features`` also times ``a_c`` (of the input channel each weight reads) and
    ``a_f``: ``[B, C_out, C_in/G, k, k]``, or ``[1, ...]`` when no factor depends on the sample."""
    n, co, ci, k, _ = weight.shape
    if "kernel" in att:
        w = _MixKernels.apply(att["kernel"].to(weight.dtype), weight)
    else:
        w = weight[:1]
    w = w.view(-1, groups, co // groups, ci, k * k)
    coef = att["spatial"].view(-1, 1, 1, 1, k * k) if "spatial" in att else None  # on (input channel, tap)
    if fold_features and "channel" in att:
        a_c = att["channel"].view(-1, groups, 1, ci, 1)
        coef = a_c if coef is None else a_c * coef
    if coef is not None:
        w = w * coef.to(w.dtype)
    if fold_features and "filter" in att:
        w = w * att["filter"].to(w.dtype).view(-1, groups, co // groups, 1, 1)
    return w.view(-1, co, ci, k, k)


def aggregate_broadcast(weight: torch.Tensor, att: Dict[str, torch.Tensor], b: int) -> torch.Tensor:
    """The published aggregation: ``sum_m (a_s * a_w * weight)[:, m]`` through a
    ``[B, n, C_out, C_in/G, k, k]`` product."""
    n, co, ci, k, _ = weight.shape
    coef = weight.new_ones(b, 1, 1, 1, 1, 1)
    if "spatial" in att:
        coef = coef * att["spatial"].to(weight.dtype).view(b, 1, 1, 1, k, k)
    if "kernel" in att:
        coef = coef * att["kernel"].to(weight.dtype).view(b, n, 1, 1, 1, 1)
    return (coef * weight.unsqueeze(0)).sum(dim=1)


def fold_is_cheaper(layer, x: torch.Tensor) -> bool:
    """Fold ``a_c`` and ``a_f`` into the per-sample kernels when that touches fewer
    elements: about 3 more passes over the kernels (``C_out * C_in/G * k * k`` per
    sample, for ``a_f``; ``a_c`` joins ``a_s``) against 3 over the input and 3 over the
    output that feature-side scaling costs (the product, and the two of its backward)."""
    k = layer.kernel_size
    kernel = layer.out_channels * (layer.in_channels // layer.groups) * k * k
    out = layer.out_channels * out_size(x.shape[2], 0, layer) * out_size(x.shape[3], 1, layer)
    return 2 * kernel <= x[0].numel() + out


def _conv_batch_in_groups(layer, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x [B, C_in, H, W]`` with per-sample ``w [B, C_out, C_in/G, k, k]`` as one
    convolution, the batch folded into the groups."""
    b = x.shape[0]
    y = F.conv2d(
        x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, *w.shape[2:]), None,
        layer.stride, layer.padding, layer.dilation, layer.groups * b,
    )
    return y.view(b, layer.out_channels, *y.shape[2:])


def _dynamic_operands(layer, x: torch.Tensor, att, fold: Optional[bool]):
    """``x_in [B, C_in, H, W]``, per-sample kernels ``w [B, C_out, C_in/G, k, k]`` and
    ``a_f [B, C_out]`` or None, such that ``y_b = conv(x_in_b, w_b) * a_f_b``."""
    fold = fold_is_cheaper(layer, x) if fold is None else fold
    w = aggregate(layer.weight, att, layer.groups, fold)
    w = w.expand(x.shape[0], *w.shape[1:])
    if fold:
        return x, w, None
    return _scale(x, att.get("channel")), w, att.get("filter")


def _forward_batch_groups(layer, x: torch.Tensor, att, fold: Optional[bool] = None) -> torch.Tensor:
    w = aggregate_broadcast(layer.weight, att, x.shape[0])
    y = _conv_batch_in_groups(layer, _scale(x, att.get("channel")), w)
    return _scale(y, att.get("filter"))


def _forward_grouped(layer, x: torch.Tensor, att, fold: Optional[bool] = None) -> torch.Tensor:
    x_in, w, a_f = _dynamic_operands(layer, x, att, fold)
    return _scale(_conv_batch_in_groups(layer, x_in, w), a_f)


def _forward_per_sample(layer, x: torch.Tensor, att, fold: Optional[bool] = None) -> torch.Tensor:
    x_in, w, a_f = _dynamic_operands(layer, x, att, fold)
    # split/unbind, not indexing: their backward writes each sample's gradient once
    y = torch.cat([
        F.conv2d(xi, wi, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        for xi, wi in zip(x_in.split(1), w.unbind(0))
    ])
    return _scale(y, a_f)


def _forward_unfold_bmm(layer, x: torch.Tensor, att, fold: Optional[bool] = None) -> torch.Tensor:
    b, g = x.shape[0], layer.groups
    ho, wo = out_size(x.shape[2], 0, layer), out_size(x.shape[3], 1, layer)
    x_in, w, a_f = _dynamic_operands(layer, x, att, fold)
    if layer.kernel_size == 1 and layer.padding == (0, 0):  # im2col of a 1x1 conv: the (strided) pixels
        cols = x_in[:, :, :: layer.stride[0], :: layer.stride[1]].reshape(b, x.shape[1], ho * wo)
    else:
        cols = F.unfold(x_in, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # [B, C_in*k*k, L]
    cols = cols.view(b, g, -1, ho * wo)  # [B, G, C_in/G*k*k, L]
    y = torch.matmul(w.reshape(b, g, layer.out_channels // g, -1).to(cols.dtype), cols)  # [B, G, C_out/G, L]
    return _scale(y.view(b, layer.out_channels, ho, wo), a_f)


def _forward_winograd(layer, x: torch.Tensor, att, fold: Optional[bool] = None) -> torch.Tensor:
    x_in, w, a_f = _dynamic_operands(layer, x, att, fold)
    return _scale(winograd_conv3x3(x_in, w, layer.padding, layer.winograd_tile), a_f)


def _forward_pointwise(layer, x: torch.Tensor, att, fold: Optional[bool] = None) -> torch.Tensor:
    y = F.conv2d(_scale(x, att.get("channel")), layer.weight[0], None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return _scale(y, att.get("filter"))


FORWARDS = {
    "batch_groups": _forward_batch_groups,
    "grouped": _forward_grouped,
    "per_sample": _forward_per_sample,
    "unfold_bmm": _forward_unfold_bmm,
    "winograd": _forward_winograd,
    "pointwise": _forward_pointwise,
}
assert set(FORWARDS) == set(IMPLS)


def auto_impl(layer, x: torch.Tensor) -> str:
    """The dispatch rule: ``"pointwise"`` when it applies; ``"grouped"`` off the CPU (no
    measurement there: cuDNN has its own algorithms); on CPU ``"winograd"`` where it
    applies with, when a backward follows (autograd on and the input or a parameter
    wanting a gradient), at least :data:`WINOGRAD_MIN_CHANNELS` input and output channels
    and :data:`WINOGRAD_MIN_TILES` 4x4 output tiles per sample, and without one at least
    :data:`WINOGRAD_INFER_MIN_CHANNELS` channels and :data:`WINOGRAD_INFER_MIN_TILES` tiles
    in the batch; else ``"unfold_bmm"`` for a 1x1 layer without autograd (one bmm over the
    pixels), else ``"per_sample"`` when one sample's convolution has at least
    :data:`PER_SAMPLE_MIN_MACS` multiply-adds, else ``"grouped"``."""
    if layer.shared_kernel:
        return "pointwise"
    if x.device.type != "cpu":
        return "grouped"
    k = layer.kernel_size
    ho, wo = out_size(x.shape[2], 0, layer), out_size(x.shape[3], 1, layer)
    tiles = math.ceil(ho / 4) * math.ceil(wo / 4)  # 4x4 tiles, the tile of the thresholds
    channels = min(layer.in_channels, layer.out_channels)
    backward = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in layer.parameters()))
    if layer.winograd_applies and (
        (channels >= WINOGRAD_MIN_CHANNELS and tiles >= WINOGRAD_MIN_TILES) if backward
        else (channels >= WINOGRAD_INFER_MIN_CHANNELS and tiles * x.shape[0] >= WINOGRAD_INFER_MIN_TILES)
    ):
        return "winograd"
    if k == 1 and not torch.is_grad_enabled():
        return "unfold_bmm"
    macs = layer.out_channels * (layer.in_channels // layer.groups) * k * k * ho * wo
    return "per_sample" if macs >= PER_SAMPLE_MIN_MACS else "grouped"


def impls_for(layer) -> Iterable[str]:
    """The formulations that apply to ``layer`` (``"pointwise"`` only with a shared kernel,
    ``"winograd"`` only for 3x3, stride 1, dilation 1, one group)."""
    applies = {"pointwise": layer.shared_kernel, "winograd": layer.winograd_applies}
    return tuple(i for i in IMPLS if applies.get(i, True))
