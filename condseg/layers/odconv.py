"""ODConv, omni-dimensional dynamic convolution (Li, Zhou & Yao, ICLR 2022), and the two
dynamic convolutions it generalises, DyConv and CondConv, as configurations of one class.

An :class:`ODConv2d` holds ``n`` candidate kernels ``weight[m]`` (``[n, C_out, C_in/G, k, k]``)
and an attention branch that reads the globally pooled input ``z_b`` of every sample b::

    h_b = ReLU(BN(fc(z_b)))                      # hidden width A = max(int(C_in * r), 16)
    a_c = sigmoid(channel_fc(h)/T)  [B, C_in]    a_f = sigmoid(filter_fc(h)/T)  [B, C_out]
    a_s = sigmoid(spatial_fc(h)/T)  [B, k, k]    a_w = softmax(kernel_fc(h)/T)  [B, n]
    y_b = a_f[b] * conv(a_c[b] * x_b, a_s[b] * sum_m a_w[b, m] * weight[m])

A head is absent (its attention is the constant 1, its keys are not in the state_dict)
when it is turned off through ``attentions`` or when it would be trivial: filter for a
true depthwise conv (``C_in == groups == C_out``), spatial for k == 1, kernel for n == 1.
Names, skip rules and initialisation follow the official code, whose state_dicts load
with ``strict=True``. ``tests/fixtures/odconv/README.md`` describes the reference outputs it is tested against.

How the three relate (same class, same forward, only the attention branch differs):

* ODConv: all four heads, softmax kernel attention, hidden layer ``fc -> BN -> ReLU``.
* DyConv (Chen et al., CVPR 2020), :func:`dyconv2d`: only the kernel head, softmax over
  the n kernels with temperature T, after the same hidden layer. (The paper's hidden
  layer is ``FC -> ReLU``; ``fc -> BN -> ReLU`` computes the same function class at
  inference, where BN is an affine map, and the paper's FC bias is BN's beta.)
* CondConv (Yang et al., NeurIPS 2019), :func:`condconv2d`: only the kernel head, with a
  *sigmoid* per expert (independent routing weights, not summing to 1), read straight
  from the pooled input by one linear layer with bias (``hidden=False``: no fc, no BN).

Formulations (``impl``; all give the same outputs and gradients, up to float rounding):

* ``"batch_groups"``: the published one, kept as the baseline. The per-sample kernel is
  aggregated through a broadcast product ``a_s * a_w * weight`` of shape
  ``[B, n, C_out, C_in/G, k, k]`` summed over n; ``x * a_c`` with the batch folded into
  the groups of one convolution (``[1, B*C_in, H, W]``, ``groups = B*G``); then ``* a_f``.
* ``"grouped"``: the same convolution, but the kernels are aggregated by one matrix
  product ``a_w @ weight.view(n, -1)`` (times ``a_s``), never materialising the
  ``[B, n, ...]`` product, and ``a_c`` / ``a_f`` are folded into the per-sample kernels
  instead of scaling the features when the kernels are the smaller tensor
  (:func:`_fold_is_cheaper`).
* ``"per_sample"``: the same kernels and folding, then one ordinary convolution per sample.
* ``"unfold_bmm"``: the same kernels and folding; im2col (``F.unfold``, or the strided
  pixels for 1x1) of the whole batch, then one batched matrix product
  ``[B, G, C_out/G, C_in/G*k*k] @ [B, G, C_in/G*k*k, L]``.
* ``"winograd"``: only for 3x3, stride 1, dilation 1, one group: the same kernels and
  folding, convolved by Winograd's F(4x4, 3x3) (:data:`WINOGRAD_TILE`,
  :mod:`condseg.layers.winograd`): per sample, 36 matrix products over transformed tiles
  replace the convolution's channel sums, 4x fewer multiply-adds, then the transforms'
  adjoints in the backward.
* ``"pointwise"``: only for a kernel shared by all samples (no spatial and no kernel
  head: k == 1 and n == 1 for ODConv): one batched convolution with ``weight[0]`` between
  ``* a_c`` and ``* a_f``, the official fast path.

``impl="auto"`` (see :func:`_auto_impl` for the rule and the measurements): "pointwise"
when it applies; on CPU "winograd" where it applies with at least 128 input and output
channels and 64 output tiles per sample, else "unfold_bmm" for 1x1 layers under
``no_grad``, else "per_sample" for per-sample convolutions of at least 2**25
multiply-adds, else "grouped"; on other devices "grouped" (not measured: no GPU here).
A layer's ``impl`` can be forced; :func:`set_default_impl` / :func:`default_impl` change
what ``"auto"`` layers use (``MODEL.ODCONV.IMPL`` reaches the constructor).
"""
import contextlib
import math
from typing import Dict, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .winograd import winograd_conv3x3

__all__ = [
    "IMPLS",
    "ATTENTIONS",
    "ODAttention",
    "ODConv2d",
    "condconv2d",
    "default_impl",
    "dyconv2d",
    "impls_for",
    "set_default_impl",
]

IMPLS = ("batch_groups", "grouped", "per_sample", "unfold_bmm", "winograd", "pointwise")
ATTENTIONS = ("channel", "filter", "spatial", "kernel")
KERNEL_ACTIVATIONS = ("softmax", "sigmoid")

_DEFAULT_IMPL = "auto"


def set_default_impl(impl: str) -> str:
    """What layers built with ``impl="auto"`` use: ``"auto"`` (the dispatch rule) or one
    of :data:`IMPLS` (a layer it does not apply to keeps the rule). Returns the previous value."""
    global _DEFAULT_IMPL
    _check_impl(impl)
    previous, _DEFAULT_IMPL = _DEFAULT_IMPL, impl
    return previous


@contextlib.contextmanager
def default_impl(impl: str):
    """Context manager form of :func:`set_default_impl`."""
    previous = set_default_impl(impl)
    try:
        yield
    finally:
        set_default_impl(previous)


def _check_impl(impl: str) -> None:
    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"ODConv impl must be 'auto' or one of {IMPLS}, got {impl!r}")


class ODAttention(nn.Module):
    """The attention branch: pooled input -> (hidden layer) -> one 1x1-conv head per attention.

    Submodules (official names): ``fc`` (1x1 conv ``C_in -> A``, no bias) and ``bn``
    (``BatchNorm2d(A)``) when ``hidden``; ``{channel,filter,spatial,kernel}_fc`` (1x1 convs
    with bias) for the heads in ``heads``. ``temperature`` is a plain float (not saved).
    """

    def __init__(
        self,
        in_channels: int,
        head_sizes: Dict[str, int],
        *,
        hidden_channels: int,
        hidden: bool = True,
        kernel_activation: str = "softmax",
        temperature: float = 1.0,
    ):
        super().__init__()
        self.temperature = float(temperature)
        self.kernel_activation = kernel_activation
        self.hidden = hidden
        feat = in_channels
        if hidden:
            self.fc = nn.Conv2d(in_channels, hidden_channels, 1, bias=False)
            self.bn = nn.BatchNorm2d(hidden_channels)
            feat = hidden_channels
        self.heads = tuple(name for name in ATTENTIONS if name in head_sizes)
        for name in self.heads:
            setattr(self, f"{name}_fc", nn.Conv2d(feat, head_sizes[name], 1, bias=True))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: Kaiming-normal (fan_out, ReLU) 1x1 convs, zero biases, BN 1/0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``[B, C_in, H, W]`` -> dict of the present heads: ``channel [B, C_in]``,
        ``filter [B, C_out]``, ``spatial [B, k, k]``, ``kernel [B, n]``."""
        b = x.shape[0]
        h = x.mean(dim=(2, 3), keepdim=True)  # [B, C_in, 1, 1]
        if self.hidden:
            if b == 1 and isinstance(self.bn, nn.BatchNorm2d) and self.bn.training:
                raise ValueError(
                    "ODConv2d: the attention BatchNorm normalises pooled [B, A, 1, 1] vectors over the batch, "
                    "so train mode needs a batch of at least 2 samples (got 1). Use a larger batch, put the "
                    "attention BN in eval mode (running statistics, e.g. MODEL.ODCONV.ATTENTION_BN_EVAL), "
                    "or freeze it (FrozenBatchNorm2d)."
                )
            h = F.relu(self.bn(self.fc(h)))
        h = h.flatten(1)  # [B, A] (or [B, C_in] without hidden layer)
        out = {}
        for name in self.heads:
            head = getattr(self, f"{name}_fc")
            logits = F.linear(h, head.weight.flatten(1), head.bias) / self.temperature
            if name == "kernel" and self.kernel_activation == "softmax":
                out[name] = torch.softmax(logits, dim=1)
            else:
                out[name] = torch.sigmoid(logits)
        if "spatial" in out:
            k = math.isqrt(out["spatial"].shape[1])
            out["spatial"] = out["spatial"].view(b, k, k)  # row-major: channel u*k+v -> tap (u, v)
        return out


def _pair(v, name: str):
    v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(v) != 2 or not all(isinstance(i, int) and i >= 0 for i in v):
        raise ValueError(f"ODConv2d: {name} must be an int >= 0 or a pair of them, got {v}")
    return v


class ODConv2d(nn.Module):
    """Omni-dimensional dynamic 2D convolution, a drop-in for detectron2's ``Conv2d``
    (``norm`` and ``activation`` are applied after the convolution; ``norm`` is the
    submodule ``norm``).

    Args:
        in_channels, out_channels, kernel_size (square), stride, padding, dilation,
        groups: as ``nn.Conv2d``.
        bias: a static ``[C_out]`` bias added after the filter attention (official: none).
        kernel_num: n candidate kernels.
        reduction, min_channel: attention hidden width ``A = max(int(C_in * r), min_channel)``.
        temperature: T dividing every head's logits (including their bias).
        attentions: the heads wanted, a subset of :data:`ATTENTIONS` (the skip rules
            still remove trivial ones).
        kernel_activation: ``"softmax"`` over the n kernels (ODConv, DyConv) or
            ``"sigmoid"`` per kernel (CondConv).
        hidden: ``fc -> BN -> ReLU`` before the heads (ODConv, DyConv) or heads straight
            on the pooled input (CondConv).
        impl: ``"auto"`` or one of :data:`IMPLS` (see the module docstring).
    Shapes: ``x [B, C_in, H, W]`` -> ``[B, C_out, H_out, W_out]`` as ``nn.Conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = False,
        *,
        kernel_num: int = 4,
        reduction: float = 0.0625,
        min_channel: int = 16,
        temperature: float = 1.0,
        attentions: Sequence[str] = ATTENTIONS,
        kernel_activation: str = "softmax",
        hidden: bool = True,
        impl: str = "auto",
        norm: Optional[nn.Module] = None,
        activation=None,
    ):
        super().__init__()
        k = _pair(kernel_size, "kernel_size")
        if k[0] != k[1] or k[0] < 1:
            raise ValueError(f"ODConv2d: kernel_size must be square and positive, got {kernel_size}")
        k = k[0]
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"ODConv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        if kernel_num < 1:
            raise ValueError(f"ODConv2d: kernel_num must be >= 1, got {kernel_num}")
        if isinstance(attentions, str):
            attentions = (attentions,)
        unknown = [a for a in attentions if a not in ATTENTIONS]
        if unknown:
            raise ValueError(f"ODConv2d: unknown attentions {unknown}; choose from {ATTENTIONS}")
        if kernel_activation not in KERNEL_ACTIVATIONS:
            raise ValueError(f"ODConv2d: kernel_activation must be one of {KERNEL_ACTIVATIONS}, got {kernel_activation!r}")
        if temperature <= 0:
            raise ValueError(f"ODConv2d: temperature must be > 0, got {temperature}")
        _check_impl(impl)

        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.stride, self.padding, self.dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
        self.groups, self.kernel_num = groups, kernel_num

        sizes = {"channel": in_channels, "filter": out_channels, "spatial": k * k, "kernel": kernel_num}
        skipped = {
            "filter": in_channels == groups == out_channels,  # true depthwise
            "spatial": k == 1,
            "kernel": kernel_num == 1,
        }
        heads = {name: sizes[name] for name in ATTENTIONS if name in attentions and not skipped.get(name, False)}
        self.attention = ODAttention(
            in_channels,
            heads,
            hidden_channels=max(int(in_channels * reduction), min_channel),
            hidden=hidden,
            kernel_activation=kernel_activation,
            temperature=temperature,
        )
        self.weight = nn.Parameter(torch.empty(kernel_num, out_channels, in_channels // groups, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.norm = norm
        self.activation = activation
        if impl == "pointwise" and not self.shared_kernel:
            raise ValueError(
                "ODConv2d: impl='pointwise' needs a kernel shared by all samples (no spatial and no kernel "
                f"attention, i.e. kernel_size 1 and kernel_num 1); this layer has heads {self.attention.heads}"
            )
        if impl == "winograd" and not self.winograd_applies:
            raise ValueError(
                "ODConv2d: impl='winograd' needs a 3x3 kernel, stride 1, dilation 1 and groups 1; this layer has "
                f"kernel_size {k}, stride {self.stride}, dilation {self.dilation}, groups {groups}"
            )
        self.impl = impl
        self.reset_parameters()

    # ------------------------------------------------------------------ setup
    def reset_parameters(self) -> None:
        """Official init: each ``weight[m]`` Kaiming-normal (fan_out = C_out*k*k, ReLU gain);
        attention convs Kaiming-normal fan_out, biases 0; attention BN 1/0."""
        for m in range(self.kernel_num):
            nn.init.kaiming_normal_(self.weight.data[m], mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.attention.reset_parameters()

    @property
    def temperature(self) -> float:
        """T, kept on the attention branch (a plain float, not in the state_dict)."""
        return self.attention.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.update_temperature(value)

    def update_temperature(self, temperature: float) -> None:
        """Set T (a plain float, not in the state_dict)."""
        if temperature <= 0:
            raise ValueError(f"ODConv2d: temperature must be > 0, got {temperature}")
        self.attention.temperature = float(temperature)

    @property
    def shared_kernel(self) -> bool:
        """True when the aggregated kernel does not depend on the sample (no spatial and no
        kernel head): the ``"pointwise"`` formulation applies."""
        return not ({"spatial", "kernel"} & set(self.attention.heads))

    @property
    def winograd_applies(self) -> bool:
        """True for the geometry of :func:`condseg.layers.winograd.winograd_conv3x3`: a 3x3
        kernel, stride 1, dilation 1, one group."""
        return self.kernel_size == 3 and self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1

    def resolved_impl(self, x: torch.Tensor) -> str:
        """The formulation a forward on ``x`` uses (``"auto"`` resolved)."""
        if self.impl != "auto":
            return self.impl
        if _DEFAULT_IMPL != "auto" and _DEFAULT_IMPL in impls_for(self):
            return _DEFAULT_IMPL
        return _auto_impl(self, x)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, kernel_num={self.kernel_num}, "
            f"heads={self.attention.heads}, kernel_activation={self.attention.kernel_activation}, "
            f"temperature={self.temperature}, impl={self.impl}"
        )
        return s + (", bias=True" if self.bias is not None else "")

    # ------------------------------------------------------------- attentions
    def attentions(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The present heads' attentions for ``x [B, C_in, H, W]`` (see :class:`ODAttention`)."""
        return self.attention(x)

    def aggregated_weight(self, att: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``a_s * sum_m a_w[m] * weight[m]`` per sample (without ``a_c`` and ``a_f``),
        ``[B, C_out, C_in/G, k, k]``, from the dict of :meth:`attentions`."""
        w = _aggregate(self.weight, att, self.groups)
        b = next(iter(att.values())).shape[0] if att else 1
        return w.expand(b, *w.shape[1:])

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:  # empty batch: a plain conv keeps shapes and the graph
            y = F.conv2d(x, self.weight[0], None, self.stride, self.padding, self.dilation, self.groups)
        else:
            att = self.attention(x)
            y = _FORWARDS[self.resolved_impl(x)](self, x, att)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1).to(y.dtype)
        if self.norm is not None:
            y = self.norm(y)
        if self.activation is not None:
            y = self.activation(y)
        return y


def dyconv2d(in_channels: int, out_channels: int, kernel_size, *args, kernel_num: int = 4, reduction: float = 0.25, **kwargs) -> ODConv2d:
    """DyConv (Chen et al., CVPR 2020): softmax attention over ``kernel_num`` kernels only,
    from ``fc -> BN -> ReLU`` of the pooled input (hidden width C_in/4 by default)."""
    return ODConv2d(
        in_channels, out_channels, kernel_size, *args, kernel_num=kernel_num, reduction=reduction,
        attentions=("kernel",), kernel_activation="softmax", hidden=True, **kwargs,
    )


def condconv2d(in_channels: int, out_channels: int, kernel_size, *args, kernel_num: int = 8, **kwargs) -> ODConv2d:
    """CondConv (Yang et al., NeurIPS 2019): ``kernel_num`` experts mixed by independent
    sigmoid routing weights ``sigmoid(Linear(pool(x)))``, no hidden layer."""
    return ODConv2d(
        in_channels, out_channels, kernel_size, *args, kernel_num=kernel_num,
        attentions=("kernel",), kernel_activation="sigmoid", hidden=False, **kwargs,
    )


# ---------------------------------------------------------------- formulations
def _out_size(size: int, i: int, layer: ODConv2d) -> int:
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
    256-channel 3x3 layer). As one matrix product it accumulates in long runs and is 5-8x
    less accurate in float32 than the published broadcast-and-sum; here it is a batched
    product over blocks of at most 64 entries, whose partial sums ``torch.sum`` adds up
    pairwise: as accurate as the published one, at the cost of one matrix product."""

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


def _aggregate(weight: torch.Tensor, att: Dict[str, torch.Tensor], groups: int, fold_features: bool = False) -> torch.Tensor:
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


def _aggregate_broadcast(weight: torch.Tensor, att: Dict[str, torch.Tensor], b: int) -> torch.Tensor:
    """The published aggregation: ``sum_m (a_s * a_w * weight)[:, m]`` through a
    ``[B, n, C_out, C_in/G, k, k]`` product."""
    n, co, ci, k, _ = weight.shape
    coef = weight.new_ones(b, 1, 1, 1, 1, 1)
    if "spatial" in att:
        coef = coef * att["spatial"].to(weight.dtype).view(b, 1, 1, 1, k, k)
    if "kernel" in att:
        coef = coef * att["kernel"].to(weight.dtype).view(b, n, 1, 1, 1, 1)
    return (coef * weight.unsqueeze(0)).sum(dim=1)


def _conv_batch_in_groups(layer: ODConv2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x [B, C_in, H, W]`` with per-sample ``w [B, C_out, C_in/G, k, k]`` as one
    convolution, the batch folded into the groups."""
    b = x.shape[0]
    y = F.conv2d(
        x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, *w.shape[2:]), None,
        layer.stride, layer.padding, layer.dilation, layer.groups * b,
    )
    return y.view(b, layer.out_channels, *y.shape[2:])


def _forward_batch_groups(layer: ODConv2d, x: torch.Tensor, att) -> torch.Tensor:
    w = _aggregate_broadcast(layer.weight, att, x.shape[0])
    y = _conv_batch_in_groups(layer, _scale(x, att.get("channel")), w)
    return _scale(y, att.get("filter"))


_FOLD: Optional[bool] = None  # measurement/test switch; None: the rule of _fold_is_cheaper


def _fold_is_cheaper(layer: ODConv2d, x: torch.Tensor) -> bool:
    """Fold ``a_c`` and ``a_f`` into the per-sample kernels when that touches fewer
    elements: about 3 more passes over the kernels (``C_out * C_in/G * k * k`` per
    sample, for ``a_f``; ``a_c`` joins ``a_s``) against 3 over the input and 3 over the
    output that feature-side scaling costs (the product, and the two of its backward).
    Measured: 1x1 256->1024 at 50x76 fwd+bwd 515 ms folded vs 690 not; res4 3x3 640 vs 692."""
    if _FOLD is not None:
        return _FOLD
    k = layer.kernel_size
    kernel = layer.out_channels * (layer.in_channels // layer.groups) * k * k
    out = layer.out_channels * _out_size(x.shape[2], 0, layer) * _out_size(x.shape[3], 1, layer)
    return 2 * kernel <= x[0].numel() + out


def _dynamic_operands(layer: ODConv2d, x: torch.Tensor, att):
    """``x_in [B, C_in, H, W]``, per-sample kernels ``w [B, C_out, C_in/G, k, k]`` and
    ``a_f [B, C_out]`` or None, such that ``y_b = conv(x_in_b, w_b) * a_f_b``."""
    fold = _fold_is_cheaper(layer, x)
    w = _aggregate(layer.weight, att, layer.groups, fold)
    w = w.expand(x.shape[0], *w.shape[1:])
    if fold:
        return x, w, None
    return _scale(x, att.get("channel")), w, att.get("filter")


def _forward_grouped(layer: ODConv2d, x: torch.Tensor, att) -> torch.Tensor:
    x_in, w, a_f = _dynamic_operands(layer, x, att)
    return _scale(_conv_batch_in_groups(layer, x_in, w), a_f)


def _forward_per_sample(layer: ODConv2d, x: torch.Tensor, att) -> torch.Tensor:
    x_in, w, a_f = _dynamic_operands(layer, x, att)
    # split/unbind, not indexing: their backward writes each sample's gradient once
    y = torch.cat([
        F.conv2d(xi, wi, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        for xi, wi in zip(x_in.split(1), w.unbind(0))
    ])
    return _scale(y, a_f)


def _forward_unfold_bmm(layer: ODConv2d, x: torch.Tensor, att) -> torch.Tensor:
    b, g = x.shape[0], layer.groups
    ho, wo = _out_size(x.shape[2], 0, layer), _out_size(x.shape[3], 1, layer)
    x_in, w, a_f = _dynamic_operands(layer, x, att)
    if layer.kernel_size == 1 and layer.padding == (0, 0):  # im2col of a 1x1 conv: the (strided) pixels
        cols = x_in[:, :, :: layer.stride[0], :: layer.stride[1]].reshape(b, x.shape[1], ho * wo)
    else:
        cols = F.unfold(x_in, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # [B, C_in*k*k, L]
    cols = cols.view(b, g, -1, ho * wo)  # [B, G, C_in/G*k*k, L]
    y = torch.matmul(w.reshape(b, g, layer.out_channels // g, -1).to(cols.dtype), cols)  # [B, G, C_out/G, L]
    return _scale(y.view(b, layer.out_channels, ho, wo), a_f)


# F(4x4, 3x3) with the points of winograd.POINTS: 5.4-8.4x a direct convolution's float32
# error at the ResNet-50 stage shapes (Lavin's points: 25-35x); 3 (F(3x3, 3x3)) is 4-5.4x
# and 2 (F(2x2, 3x3)) 1.3-1.8x, at 1.14-1.31x the time of a res4 training step
# (docs/BENCHMARKS.md)
WINOGRAD_TILE = 4


def _forward_winograd(layer: ODConv2d, x: torch.Tensor, att) -> torch.Tensor:
    x_in, w, a_f = _dynamic_operands(layer, x, att)
    return _scale(winograd_conv3x3(x_in, w, layer.padding, WINOGRAD_TILE), a_f)


def _forward_pointwise(layer: ODConv2d, x: torch.Tensor, att) -> torch.Tensor:
    y = F.conv2d(_scale(x, att.get("channel")), layer.weight[0], None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return _scale(y, att.get("filter"))


_FORWARDS = {
    "batch_groups": _forward_batch_groups,
    "grouped": _forward_grouped,
    "per_sample": _forward_per_sample,
    "unfold_bmm": _forward_unfold_bmm,
    "winograd": _forward_winograd,
    "pointwise": _forward_pointwise,
}
assert set(_FORWARDS) == set(IMPLS)


# Measurements behind the rule: forward + backward of sum(out * g), train mode, float32,
# 2 threads, torch 2.14.1, this project's 2-core AMD EPYC (Zen 4) VM. Median ms over
# interleaved runs in one process, keeping only runs during which other processes used
# < 5% of the CPUs (/proc/stat); (x) = speedup over batch_groups. "nn.Conv2d" is a plain
# convolution of the same shape (one kernel for the batch): the floor for the same FLOPs.
#
#   layer, input                      batch_groups  grouped       per_sample    unfold_bmm    nn.Conv2d
#   3x3 256->256 n4, [8,256,50,76]     748          609 (1.23)    618 (1.21)    1844 (0.41)   584 (1.28)
#   3x3 256->256 n4, [2,256,50,76]     196          165 (1.19)    158 (1.24)     322 (0.61)   143 (1.37)
#   1x1 256->1024 n4, [8,256,50,76]   1092          667 (1.64)    553 (1.97)     594 (1.84)   727 (1.50)
#   1x1 256->1024 n4, [2,256,50,76]    146          105 (1.39)     97 (1.51)     109 (1.34)    83 (1.75)
#   1x1 1024->256 n4, [8,1024,50,76]   956          794 (1.20)    550 (1.74)     630 (1.52)   613 (1.56)
#   3x3 128->128 n4, [8,128,100,152]  1141          941 (1.21)    818 (1.39)                  862 (1.32)
#   3x3 512->512 n4, [8,512,25,38]    1250          940 (1.33)    848 (1.47)                  554 (2.26)
#   3x3 64->64 n4, [64,64,14,14]       104           51 (2.04)    104 (1.01)                   24 (4.4)
#   3x3 512->512 n4, [64,512,7,7]     9267         2840 (3.26)   2638 (3.51)                  254 (36)
#
# (The first four rows come from one run; the others from separate runs.)
# Five more runs of the first row: batch_groups 722-953 (median of each run), grouped
# 609-659, per_sample 618-658 (one run 814). batch_groups varies most: its [B, n, ...]
# product (75 MB here) and that product's gradient are fresh allocations every step
# (about 60k page faults and 200-270 ms of system time per step). The other formulations
# are within 5-15% of nn.Conv2d, which needs the same multiply-adds: the convolution
# itself is the floor there. unfold_bmm loses on this CPU because its batched GEMMs run
# at about half the rate of oneDNN's convolutions (93 against 188 GFLOP/s); the Python
# loop of per_sample only costs at small per-sample convolutions (the 64x14x14 row).
# For 1x1 layers oneDNN's per-sample convolutions beat its batched one (backward).
#
# Inference (eval, no_grad; fewer clean runs, the machine was busier):
#   1x1 256->1024 n4, [8,256,50,76]    259          215 (1.20)    228 (1.14)     171 (1.51)   228
#   1x1 256->1024 n4, [2,256,50,76]     64           66 (0.97)     53 (1.21)      40 (1.60)    50
#   3x3 256->256 n4, [2,256,50,76]      52           49 (1.07)     51 (1.04)     131 (0.40)    45
# so without autograd a 1x1 layer is one bmm over the (strided) pixels: "unfold_bmm".
PER_SAMPLE_MIN_MACS = 2**25

# Winograd F(4x4, 3x3) against the best of grouped / per_sample, 3x3 C->C n4, batch 8,
# same conditions (median of 7 interleaved runs; train = forward + backward; Lavin's
# points, as fast as those of winograd.POINTS):
#
#   C, H x W (tiles per sample)     train          inference
#   512, 25x38 (70)                 1.49x          1.19x       (ResNet-50 res5 at 800x1216)
#   256, 50x76 (247)                1.97x          1.52x       (res4)
#   128, 100x152 (950)              1.68x          1.25x       (res3)
#   64, 200x304 (3800)              1.11x          0.84x       (res2)
#   64, 100x152 (950)               1.12x          0.86x
#   512, 13x19 (20)                 0.81x          0.65x
#   256, 9x12 (9)                   0.42x          0.32x
#   128, 18x24 (30)                 0.78x          0.63x
#   64, 36x48 (108)                 0.99x          0.76x
#   32, 72x96 (432)                 0.69x          0.50x
#
# It pays when the channel products are large (>= 128 channels) and there are enough
# tiles to amortise the kernel transform (4x the kernel's size, per sample).
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_MIN_TILES = 64


def _auto_impl(layer: ODConv2d, x: torch.Tensor) -> str:
    """The dispatch rule: ``"pointwise"`` when it applies; ``"grouped"`` off the CPU; on
    CPU ``"winograd"`` where it applies with at least :data:`WINOGRAD_MIN_CHANNELS` input
    and output channels and :data:`WINOGRAD_MIN_TILES` 4x4 output tiles per sample, else
    ``"unfold_bmm"`` for a 1x1 layer without autograd, else ``"per_sample"`` when one
    sample's convolution has at least :data:`PER_SAMPLE_MIN_MACS` multiply-adds, else
    ``"grouped"``."""
    if layer.shared_kernel:
        return "pointwise"
    if x.device.type != "cpu":
        return "grouped"
    k = layer.kernel_size
    ho, wo = _out_size(x.shape[2], 0, layer), _out_size(x.shape[3], 1, layer)
    if (
        layer.winograd_applies
        and min(layer.in_channels, layer.out_channels) >= WINOGRAD_MIN_CHANNELS
        and math.ceil(ho / 4) * math.ceil(wo / 4) >= WINOGRAD_MIN_TILES  # 4x4 tiles, as measured
    ):
        return "winograd"
    if k == 1 and not torch.is_grad_enabled():
        return "unfold_bmm"
    macs = layer.out_channels * (layer.in_channels // layer.groups) * k * k * ho * wo
    return "per_sample" if macs >= PER_SAMPLE_MIN_MACS else "grouped"


def impls_for(layer: ODConv2d) -> Iterable[str]:
    """The formulations that apply to ``layer`` (``"pointwise"`` only with a shared kernel,
    ``"winograd"`` only for 3x3, stride 1, dilation 1, one group)."""
    applies = {"pointwise": layer.shared_kernel, "winograd": layer.winograd_applies}
    return tuple(i for i in IMPLS if applies.get(i, True))
