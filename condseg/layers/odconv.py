"""ODConv, omni-dimensional dynamic convolution (Li, Zhou & Yao, ICLR 2022), and the two
dynamic convolutions it generalises, DyConv and CondConv, as configurations of one class.

An :class:`ODConv2d` holds ``n`` candidate kernels ``weight[m]`` (``[n, C_out, C_in/G, k, k]``)
and an attention branch (:class:`~condseg.layers.odconv_attention.ODAttention`) that reads
the globally pooled input ``z_b`` of every sample b::

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

The forward runs one of the formulations of :mod:`condseg.layers.odconv_formulations`
(``impl``, :data:`IMPLS`; same outputs and gradients up to float rounding), chosen per
layer: ``MODEL.ODCONV.IMPL`` reaches the constructor, ``"auto"`` is the dispatch rule
(:func:`~condseg.layers.odconv_formulations.auto_impl`), or with ``autotune``
(``MODEL.ODCONV.AUTOTUNE``) the formulation measured fastest at the first use of each
input shape, cached per machine (:mod:`condseg.layers.odconv_autotune`); ``layer.impl``
and ``layer.autotune`` can be reassigned on a built layer (they hold no state), and
:meth:`ODConv2d.resolved_impl` says what a forward on a given input runs.
"""
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .odconv_attention import ATTENTIONS, KERNEL_ACTIVATIONS, ODAttention
from .odconv_autotune import default_tuner
from .odconv_formulations import FORWARDS, IMPLS, WINOGRAD_TILE, aggregate, auto_impl, check_impl, impls_for
from .winograd import TILE_SIZES

__all__ = [
    "IMPLS",
    "ATTENTIONS",
    "WINOGRAD_TILE",
    "ODAttention",
    "ODConv2d",
    "condconv2d",
    "dyconv2d",
    "impls_for",
]


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
        autotune: with ``impl="auto"``, measure the formulations at the first use of each
            input shape and keep the fastest (:mod:`condseg.layers.odconv_autotune`;
            ``layer.tuner``, None by default, is the process-wide
            :func:`~condseg.layers.odconv_autotune.default_tuner`); False: the fixed rule.
        winograd_tile: m of the F(m x m, 3x3) that ``"winograd"`` runs, one of
            :data:`condseg.layers.winograd.TILE_SIZES` (default :data:`WINOGRAD_TILE`).
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
        autotune: bool = False,
        winograd_tile: int = WINOGRAD_TILE,
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
        check_impl(impl)
        if winograd_tile not in TILE_SIZES:
            raise ValueError(f"ODConv2d: winograd_tile must be one of {TILE_SIZES}, got {winograd_tile!r}")

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
        self.autotune = bool(autotune)
        self.tuner = None  # an ODConvTuner of its own; None: the process-wide one
        self.winograd_tile = winograd_tile
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

    def resolved_impl(self, x: torch.Tensor, att: Optional[Dict[str, torch.Tensor]] = None) -> str:
        """The formulation a forward on ``x`` uses (``"auto"`` resolved: by the rule, or with
        ``autotune`` by the tuner, which measures now if this input's shape is new, with the
        attentions ``att`` of the forward or random ones)."""
        if self.impl != "auto":
            return self.impl
        if self.autotune:
            return (self.tuner or default_tuner()).choose(self, x, att)
        return auto_impl(self, x)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, kernel_num={self.kernel_num}, "
            f"heads={self.attention.heads}, kernel_activation={self.attention.kernel_activation}, "
            f"temperature={self.temperature}, impl={self.impl}"
        )
        s += ", autotune=True" if self.autotune else ""
        return s + (", bias=True" if self.bias is not None else "")

    # ------------------------------------------------------------- attentions
    def attentions(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The present heads' attentions for ``x [B, C_in, H, W]`` (see :class:`ODAttention`)."""
        return self.attention(x)

    def aggregated_weight(self, att: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``a_s * sum_m a_w[m] * weight[m]`` per sample (without ``a_c`` and ``a_f``),
        ``[B, C_out, C_in/G, k, k]``, from the dict of :meth:`attentions`."""
        w = aggregate(self.weight, att, self.groups)
        b = next(iter(att.values())).shape[0] if att else 1
        return w.expand(b, *w.shape[1:])

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:  # empty batch: a plain conv keeps shapes and the graph
            y = F.conv2d(x, self.weight[0], None, self.stride, self.padding, self.dilation, self.groups)
        else:
            att = self.attention(x)
            y = FORWARDS[self.resolved_impl(x, att)](self, x, att)
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
