"""ODConv's formulations: the attentions folded into the kernels or applied to the features
give the same numbers, the kernel mix's gradient is as accurate as the published one, and
``"auto"`` follows the dispatch rule."""
import pytest
import torch
from odconv_reference import GENERAL_IMPLS, err, official_layer, rel_error

from condseg.layers import ODConv2d
from condseg.layers.odconv_formulations import (
    FORWARDS,
    IMPLS,
    aggregate,
    aggregate_broadcast,
    check_impl,
    impls_for,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("case", ["layer_k3_kn4.pt", "layer_k3_kn2_groups2.pt", "layer_dw_kn4.pt", "layer_pw_kn4_s2.pt"])
def test_kernel_side_and_feature_side_attentions_agree(layer_fixture, case, fold):
    # a_c / a_f folded into the per-sample kernels or applied to the features: same numbers
    d = layer_fixture(case)
    for impl in ("grouped", "per_sample", "unfold_bmm"):
        m = official_layer(d, impl, torch.float64)  # the official layer: no bias, norm or activation
        x = d["x"].double().clone().requires_grad_(True)
        out = FORWARDS[impl](m, x, m.attentions(x), fold=fold)
        (out * d["g"].double()).sum().backward()
        assert err(out, d["out_f64"]) < 1e-10 and err(x.grad, d["grad_x_f64"]) < 1e-10, impl


@pytest.mark.parametrize("n,co,ci,k", [(4, 256, 256, 3), (4, 512, 512, 3), (4, 1024, 256, 1), (8, 64, 64, 3), (2, 12, 8, 5)])
def test_kernel_mix_gradient_is_as_accurate_as_the_published_broadcast(n, co, ci, k):
    """The gradient w.r.t. the kernel attention of the kernel mix sums over all
    C_out * C_in * k * k entries: within 2x of the published broadcast-and-sum's float32
    error (one plain matrix product: 8-150x)."""
    g = torch.Generator().manual_seed(co + k)
    weight = torch.randn(n, co, ci, k, k, generator=g) * (2 / (co * k * k)) ** 0.5
    att = {"kernel": torch.softmax(torch.randn(8, n, generator=g), 1), "spatial": torch.rand(8, k, k, generator=g)}
    cotangent = torch.randn(8, co, ci, k, k, generator=g)

    def grad(aggregation, dtype):
        a = {name: t.to(dtype).clone().requires_grad_(name == "kernel") for name, t in att.items()}
        (aggregation(weight.to(dtype), a) * cotangent.to(dtype)).sum().backward()
        return a["kernel"].grad

    ref = grad(lambda w, a: aggregate(w, a, 1), torch.float64)
    published = rel_error(grad(lambda w, a: aggregate_broadcast(w, a, 8), torch.float32), ref)
    ours = rel_error(grad(lambda w, a: aggregate(w, a, 1), torch.float32), ref)
    assert ours <= 2 * published, (ours, published)


def test_auto_dispatch_and_forced_impl():
    pw = ODConv2d(8, 8, 1, kernel_num=1)
    k3 = ODConv2d(8, 8, 3, padding=1)
    forced = ODConv2d(8, 8, 3, padding=1, impl="per_sample")
    x = torch.randn(2, 8, 5, 5)
    assert pw.resolved_impl(x) == "pointwise"
    assert k3.resolved_impl(x) == "grouped"  # small per-sample convs: one call for the batch
    big = ODConv2d(64, 64, 3, padding=1)  # 64*64*9*64*64 multiply-adds per sample: a loop is fine
    assert big.resolved_impl(torch.empty(2, 64, 64, 64)) == "per_sample"
    assert big.resolved_impl(torch.empty(2, 64, 16, 16)) == "grouped"
    conv1x1 = ODConv2d(256, 1024, 1)
    assert conv1x1.resolved_impl(torch.empty(2, 256, 50, 76)) == "per_sample"
    with torch.no_grad():  # inference: one bmm over the pixels
        assert conv1x1.resolved_impl(torch.empty(2, 256, 50, 76)) == "unfold_bmm"
        assert big.resolved_impl(torch.empty(2, 64, 64, 64)) == "per_sample"
    assert impls_for(k3) == GENERAL_IMPLS and impls_for(pw) == tuple(i for i in IMPLS if i != "winograd")
    assert "winograd" not in impls_for(ODConv2d(8, 8, 3, padding=1, stride=2))
    assert "winograd" not in impls_for(ODConv2d(8, 8, 3, padding=2, dilation=2))
    assert "winograd" not in impls_for(ODConv2d(8, 16, 3, padding=1, groups=2))
    # with a backward: winograd from 128 channels and 64 4x4 output tiles per sample
    wide = ODConv2d(128, 128, 3, padding=1)
    assert wide.resolved_impl(torch.empty(2, 128, 32, 32)) == "winograd"  # 8 x 8 tiles
    assert wide.resolved_impl(torch.empty(2, 128, 28, 28)) == "per_sample"  # 7 x 7 tiles
    # without one: from 256 channels and 1024 tiles in the batch
    wider = ODConv2d(256, 256, 3, padding=1)
    with torch.no_grad():
        assert wide.resolved_impl(torch.empty(8, 128, 128, 128)) == "per_sample"  # 128 channels
        assert wider.resolved_impl(torch.empty(4, 256, 64, 64)) == "winograd"  # 4 x 256 tiles
        assert wider.resolved_impl(torch.empty(2, 256, 64, 64)) == "per_sample"  # 2 x 256 tiles
    for p in wider.parameters():  # frozen, on an input without gradient: no backward either
        p.requires_grad_(False)
    assert wider.resolved_impl(torch.empty(2, 256, 64, 64)) == "per_sample"
    assert wider.resolved_impl(torch.empty(2, 256, 64, 64, requires_grad=True)) == "winograd"
    assert ODConv2d(64, 64, 3, padding=1).resolved_impl(torch.empty(2, 64, 64, 64)) == "per_sample"
    assert ODConv2d(128, 128, 3, padding=1, stride=2).resolved_impl(torch.empty(2, 128, 64, 64)) == "per_sample"
    # a layer's own impl, given or reassigned, wins over the rule
    assert forced.resolved_impl(x) == "per_sample"
    for impl in impls_for(k3):
        k3.impl = impl
        assert k3.resolved_impl(x) == impl
    with pytest.raises(ValueError, match="impl must be"):
        check_impl("fft")
