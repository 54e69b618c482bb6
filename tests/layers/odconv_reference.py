"""Helpers of the ODConv tests: the official layer rebuilt from a fixture, and the error
measures the README quotes."""
import torch

from condseg.layers import ODConv2d
from condseg.layers.odconv import IMPLS

GENERAL_IMPLS = tuple(i for i in IMPLS if i != "pointwise")  # "pointwise" needs k == 1 and one kernel


def err(a, e):
    """The README's error: max|a - e| / max(1, max|e|), in float64."""
    a, e = a.detach().double(), e.detach().double()
    return ((a - e).abs().max() / max(1.0, e.abs().max().item())).item()


def rel_error(a, ref):
    """Norm-wise relative error of ``a`` against the float64 ``ref``."""
    return float((a.detach().double() - ref).norm() / ref.norm())


def official_layer(d, impl="auto", dtype=torch.float32):
    """condseg's ODConv2d with the official layer's config and weights of fixture ``d``."""
    c = d["config"]
    m = ODConv2d(
        c["in_planes"], c["out_planes"], c["kernel_size"], c["stride"], c["padding"], c["dilation"], c["groups"],
        kernel_num=c["kernel_num"], reduction=c["reduction"], min_channel=c["min_channel"], impl=impl,
    )
    m.load_state_dict(d["state_dict"], strict=True)
    m.update_temperature(c["temperature"])
    return m.to(dtype).eval()
