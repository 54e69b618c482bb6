"""ODConv2d reproduces the official ODConv in every formulation; DyConv and CondConv are its configurations."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from torch import nn
from torch.func import functional_call

from condseg.layers import ODConv2d, condconv2d, dyconv2d, odconv_formulations
from condseg.layers.odconv import ATTENTIONS, IMPLS, impls_for
from condseg.layers.winograd import TILE_SIZES
from odconv_reference import GENERAL_IMPLS, err, official_layer, rel_error

pytestmark = pytest.mark.usefixtures("one_thread")

LAYER_CASES = [
    "layer_k3_kn4.pt",
    "layer_k3_kn1_s2.pt",
    "layer_pw_kn1.pt",
    "layer_dw_kn4.pt",
    "layer_dw_kn1_s2.pt",
    "layer_k3_kn4_temp30.pt",
    "layer_pw_kn4_s2.pt",
    "layer_k3_kn2_groups2.pt",
    "layer_k3_kn2_dil2.pt",
    "layer_k3_kn1_g16_out32.pt",
    "layer_k3_kn2_red05_in64.pt",
    "layer_k5_kn2_s2_p2.pt",
]
# "pointwise" needs a kernel shared by all samples: k == 1 and n == 1; "winograd" a 3x3
# kernel, stride 1, dilation 1 and one group (test_winograd_cases_are_those_it_applies_to)
WINOGRAD_CASES = ("layer_k3_kn4.pt", "layer_k3_kn4_temp30.pt", "layer_k3_kn2_red05_in64.pt")
CASE_IMPLS = [
    (c, i) for c in LAYER_CASES for i in IMPLS
    if (i != "pointwise" or c == "layer_pw_kn1.pt") and (i != "winograd" or c in WINOGRAD_CASES)
]


def forward_backward(m, x, g):
    """``out``, ``dL/dx`` and ``{name: dL/dparam}`` for ``L = sum(out * g)``."""
    x = x.clone().requires_grad_(True)
    out = m(x)
    (out * g).sum().backward()
    return out, x.grad, {k: p.grad for k, p in m.named_parameters()}


def reference_forward(m, x):
    """The README's definition, one sample at a time: conv(x_b, W~_b) with
    W~_b[o, i] = a_f[o] * a_c[cin(o, i)] * a_s * sum_m a_w[m] * weight[m, o, i]."""
    att = m.attentions(x)
    n, co, ci, k, _ = m.weight.shape
    outs = []
    for b in range(x.shape[0]):
        w = sum((att["kernel"][b, j] if "kernel" in att else 1.0) * m.weight[j] for j in range(n))
        if "spatial" in att:
            w = w * att["spatial"][b]
        if "channel" in att:
            cin = (torch.arange(co)[:, None] // (co // m.groups)) * ci + torch.arange(ci)[None, :]
            w = w * att["channel"][b][cin][:, :, None, None]
        if "filter" in att:
            w = w * att["filter"][b][:, None, None, None]
        outs.append(F.conv2d(x[b : b + 1], w, None, m.stride, m.padding, m.dilation, m.groups))
    return torch.cat(outs)


# ------------------------------------------------------------------ fixtures
def test_winograd_cases_are_those_it_applies_to(layer_fixture):
    applies = {c for c in LAYER_CASES if "winograd" in impls_for(official_layer(layer_fixture(c)))}
    assert applies == set(WINOGRAD_CASES)
    with pytest.raises(ValueError, match="impl='winograd' needs a 3x3 kernel, stride 1"):
        official_layer(layer_fixture("layer_k3_kn1_s2.pt"), "winograd")


@pytest.mark.parametrize("case,impl", CASE_IMPLS)
def test_layer_matches_official_fixture(layer_fixture, case, impl):
    d = layer_fixture(case)
    m = official_layer(d, impl)
    out, grad_x, grads = forward_backward(m, d["x"], d["g"])
    assert err(out, d["out"]) < 1e-5
    assert err(grad_x, d["grad_x"]) < 1e-5
    assert set(grads) == set(d["grads"])
    for name, expected in d["grads"].items():
        assert err(grads[name], expected) < 5e-5, name
    with torch.no_grad():
        att = m.attentions(d["x"])
        assert set(att) == set(d["attention"])
        for name, expected in d["attention"].items():
            assert att[name].shape == expected.shape and err(att[name], expected) < 1e-5, name
        assert err(m.aggregated_weight(att), d["aggregated_weight"]) < 1e-5


@pytest.mark.parametrize("case,impl", CASE_IMPLS)
def test_layer_matches_official_fixture_in_float64(layer_fixture, case, impl):
    d = layer_fixture(case)
    m = official_layer(d, impl, torch.float64)
    out, grad_x, _ = forward_backward(m, d["x"].double(), d["g"].double())
    assert out.dtype == torch.float64
    assert err(out, d["out_f64"]) < 1e-10
    assert err(grad_x, d["grad_x_f64"]) < 1e-10
    with torch.no_grad():
        att = m.attentions(d["x"].double())
    for name, expected in d["attention_f64"].items():
        assert err(att[name], expected) < 1e-10, name


@pytest.mark.parametrize("impl", GENERAL_IMPLS)
def test_train_mode_uses_batch_statistics_like_the_fixture(layer_fixture, impl):
    d = layer_fixture("layer_k3_kn4.pt")
    t = d["train_mode"]
    m = official_layer(d, impl).train()
    out, grad_x, grads = forward_backward(m, d["x"], d["g"])
    assert err(out, t["out"]) < 1e-5
    assert err(grad_x, t["grad_x"]) < 1e-5
    for name, expected in t["grads"].items():
        assert err(grads[name], expected) < 5e-5, name
    bn = m.attention.bn
    assert err(bn.running_mean, t["bn_running_mean_after"]) < 1e-5
    assert err(bn.running_var, t["bn_running_var_after"]) < 1e-5
    assert bn.num_batches_tracked.item() == t["bn_num_batches_tracked_after"].item()


def test_formulations_match_the_per_sample_definition():
    torch.manual_seed(0)
    m = ODConv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=2, bias=True, kernel_num=3, min_channel=4).double()
    with torch.no_grad():
        m.bias.normal_()
    x = torch.randn(3, 8, 10, 9, dtype=torch.float64)
    expected = reference_forward(m, x) + m.bias.view(1, -1, 1, 1)
    for impl in impls_for(m):
        m.impl = impl
        torch.testing.assert_close(m(x), expected, rtol=0, atol=1e-12)
    # winograd's geometry: 3x3, stride 1, one group (any padding)
    m = ODConv2d(8, 12, 3, padding=2, bias=True, kernel_num=3, min_channel=4).double()
    with torch.no_grad():
        m.bias.normal_()
    expected = reference_forward(m, x) + m.bias.view(1, -1, 1, 1)
    for impl in impls_for(m):
        m.impl = impl
        torch.testing.assert_close(m(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_in_float64(impl):
    torch.manual_seed(0)
    if impl == "pointwise":
        m = ODConv2d(4, 6, 1, kernel_num=1, min_channel=3, impl=impl, bias=True)
    else:  # winograd: one group
        m = ODConv2d(4, 6, 3, padding=1, groups=1 if impl == "winograd" else 2, kernel_num=3, min_channel=3, impl=impl)
    m = m.double().train()  # attention BN on batch statistics
    names = [k for k, _ in m.named_parameters()]
    x = torch.randn(2, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in m.named_parameters())

    def fn(x, *params):
        return functional_call(m, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, fast_mode=True)


# ------------------------------------------------------------- construction
def test_parameter_names_and_skip_rules():
    def keys(*args, **kwargs):
        return {k for k in ODConv2d(*args, **kwargs).state_dict() if k.startswith("attention.") and k.endswith("_fc.weight")}

    all4 = {f"attention.{a}_fc.weight" for a in ATTENTIONS}
    assert keys(16, 32, 3, kernel_num=4) == all4
    assert keys(16, 16, 3, groups=16, kernel_num=4) == all4 - {"attention.filter_fc.weight"}  # true depthwise
    assert keys(16, 32, 3, groups=16, kernel_num=1) == all4 - {"attention.kernel_fc.weight"}  # multiplier 2 keeps filter
    assert keys(16, 16, 1, kernel_num=1) == {"attention.channel_fc.weight", "attention.filter_fc.weight"}
    assert keys(16, 16, 3, kernel_num=4, attentions=("channel", "kernel")) == {
        "attention.channel_fc.weight", "attention.kernel_fc.weight"}
    m = ODConv2d(64, 128, 3, kernel_num=2, reduction=0.5)
    sd = m.state_dict()
    assert sd["weight"].shape == (2, 128, 64, 3, 3)
    assert sd["attention.fc.weight"].shape == (32, 64, 1, 1)  # A = max(int(64 * 0.5), 16)
    assert sd["attention.spatial_fc.weight"].shape == (9, 32, 1, 1)
    assert "bias" not in sd and not any("temperature" in k for k in sd)
    assert ODConv2d(8, 8, 3, kernel_num=1).weight.shape == (1, 8, 8, 3, 3)  # stacked even when n == 1
    assert ODConv2d(2048, 8, 1).attention.fc.out_channels == 128


def test_official_init_statistics():
    torch.manual_seed(0)
    m = ODConv2d(256, 128, 3, kernel_num=4)
    std = math.sqrt(2 / (128 * 9))
    for j in range(4):  # each slice its own Kaiming-normal, fan_out
        assert m.weight[j].std().item() == pytest.approx(std, rel=0.03)
        assert m.weight[j].mean().abs().item() < 0.1 * std
    assert not torch.equal(m.weight[0], m.weight[1])
    a = m.attention
    for conv, out in ((a.fc, 16), (a.channel_fc, 256), (a.filter_fc, 128), (a.spatial_fc, 9), (a.kernel_fc, 4)):
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / out), rel=0.15)
        assert conv.bias is None or not conv.bias.any()
    assert torch.equal(a.bn.weight, torch.ones(16)) and not a.bn.bias.any()
    assert not a.bn.running_mean.any() and torch.equal(a.bn.running_var, torch.ones(16))


def test_temperature_is_a_plain_attribute_that_sharpens_the_attentions():
    torch.manual_seed(0)
    m = ODConv2d(16, 16, 3, padding=1, kernel_num=4, temperature=30.0).eval()
    x = torch.randn(2, 16, 6, 6)
    soft = m.attentions(x)["kernel"]
    assert m.temperature == 30.0
    m.temperature = 1
    assert m.temperature == m.attention.temperature == 1.0 and isinstance(m.temperature, float)
    sharp = m.attentions(x)["kernel"]
    assert (soft.max(1).values - soft.min(1).values < sharp.max(1).values - sharp.min(1).values).all()
    assert set(m.state_dict()) == set(ODConv2d(16, 16, 3, kernel_num=4).state_dict())
    with pytest.raises(ValueError, match="temperature"):
        m.update_temperature(0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(impl="fast"), "impl must be 'auto' or one of"),
        (dict(impl="pointwise"), "pointwise"),
        (dict(attentions=("channel", "spatail")), "unknown attentions"),
        (dict(kernel_activation="relu"), "kernel_activation"),
        (dict(groups=3), "divisible by groups"),
        (dict(kernel_size=(3, 1)), "square"),
        (dict(padding="same"), "padding must be an int"),
        (dict(kernel_num=0), "kernel_num"),
        (dict(temperature=-1.0), "temperature"),
        (dict(winograd_tile=5), "winograd_tile must be one of"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    args = dict(in_channels=8, out_channels=8, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ODConv2d(**args)


@pytest.mark.parametrize("tile", TILE_SIZES)
def test_winograd_tile_is_the_one_the_layer_runs(monkeypatch, tile):
    torch.manual_seed(0)
    m = ODConv2d(8, 12, 3, padding=1, bias=True, kernel_num=3, min_channel=4, impl="winograd", winograd_tile=tile).double()
    tiles, winograd_conv3x3 = [], odconv_formulations.winograd_conv3x3

    def spy(x, w, padding, m):
        tiles.append(m)
        return winograd_conv3x3(x, w, padding, m)

    monkeypatch.setattr(odconv_formulations, "winograd_conv3x3", spy)
    x = torch.randn(3, 8, 10, 9, dtype=torch.float64)
    torch.testing.assert_close(m(x), reference_forward(m, x) + m.bias.view(1, -1, 1, 1), rtol=0, atol=1e-12)
    assert tiles == [tile]


def test_batch_of_one_in_train_mode_explains_the_attention_bn():
    m = ODConv2d(8, 8, 3, padding=1).train()
    with pytest.raises(ValueError, match="at least 2 samples"):
        m(torch.randn(1, 8, 5, 5))
    m.attention.bn.eval()  # running statistics: fine
    assert m(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)
    frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(ODConv2d(8, 8, 3, padding=1)).train()
    assert isinstance(frozen.attention.bn, FrozenBatchNorm2d)
    assert frozen(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)
    assert condconv2d(8, 8, 3, padding=1).train()(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)  # no BN


# ------------------------------------------------------- detectron2 drop-in
def test_norm_activation_bias_and_empty_batch_like_detectron2_conv2d():
    torch.manual_seed(0)
    m = ODConv2d(8, 6, 3, stride=2, padding=1, bias=True, norm=nn.BatchNorm2d(6), activation=F.relu).eval()
    with torch.no_grad():
        m.bias.normal_()
        m.norm.running_mean.normal_()
    assert {"norm.weight", "norm.running_mean", "bias"} <= set(m.state_dict())
    x = torch.randn(2, 8, 7, 7)
    raw = reference_forward(m, x) + m.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(m(x), F.relu(m.norm(raw)))
    assert m(torch.randn(0, 8, 7, 7)).shape == (0, 6, 4, 4)


def test_autocast_runs_in_bfloat16_on_cpu():
    torch.manual_seed(0)
    m = ODConv2d(16, 16, 3, padding=1, kernel_num=2).eval()
    x = torch.randn(2, 16, 6, 6)
    expected = m(x)
    for impl in impls_for(m):
        m.impl = impl
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x)
        assert out.shape == expected.shape and err(out, expected) < 0.05, impl


# -------------------------------------------------- DyConv and CondConv
def test_dyconv_is_softmax_kernel_attention_only():
    torch.manual_seed(0)
    m = dyconv2d(16, 8, 3, padding=1, kernel_num=4, temperature=2.0).double().eval()
    with torch.no_grad():
        m.attention.kernel_fc.bias.normal_()
    assert m.attention.heads == ("kernel",)
    assert {k for k in m.state_dict() if "_fc" in k} == {"attention.kernel_fc.weight", "attention.kernel_fc.bias"}
    x = torch.randn(3, 16, 6, 5, dtype=torch.float64)
    a_w = m.attentions(x)["kernel"]
    torch.testing.assert_close(a_w.sum(1), torch.ones(3, dtype=torch.float64))
    a = m.attention
    h = F.relu(a.bn(a.fc(x.mean((2, 3), keepdim=True)))).flatten(1)
    torch.testing.assert_close(a_w, torch.softmax(F.linear(h, a.kernel_fc.weight.flatten(1), a.kernel_fc.bias) / 2.0, 1))
    expected = torch.cat([F.conv2d(x[b : b + 1], torch.einsum("m,moikl->oikl", a_w[b], m.weight), padding=1) for b in range(3)])
    for impl in GENERAL_IMPLS:
        m.impl = impl
        torch.testing.assert_close(m(x), expected, rtol=0, atol=1e-12)


def test_condconv_is_sigmoid_routing_straight_from_the_pooled_input():
    torch.manual_seed(0)
    m = condconv2d(16, 8, 3, padding=1, kernel_num=8).double()
    assert set(m.state_dict()) == {"weight", "attention.kernel_fc.weight", "attention.kernel_fc.bias"}
    assert m.attention.kernel_fc.weight.shape == (8, 16, 1, 1)
    with torch.no_grad():
        m.attention.kernel_fc.bias.normal_()
    x = torch.randn(3, 16, 6, 5, dtype=torch.float64)
    fc = m.attention.kernel_fc
    r = torch.sigmoid(x.mean((2, 3)) @ fc.weight.flatten(1).t() + fc.bias)  # [B, n], rows need not sum to 1
    torch.testing.assert_close(m.attentions(x)["kernel"], r)
    assert not torch.allclose(r.sum(1), torch.ones(3, dtype=torch.float64))
    expected = torch.cat([F.conv2d(x[b : b + 1], (r[b].view(-1, 1, 1, 1, 1) * m.weight).sum(0), padding=1) for b in range(3)])
    for impl in GENERAL_IMPLS:
        m.impl = impl
        torch.testing.assert_close(m(x), expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ float32 accuracy
@pytest.mark.parametrize("impl", ["grouped", "per_sample", "unfold_bmm", "auto"])
def test_kernel_attention_gradients_as_accurate_as_batch_groups(impl):
    """One 256 -> 256 3x3 layer, kernel_num 4, train mode: the float32 gradients of the
    kernel attention head within 2x of the published formulation's error against float64
    (summed over three draws: one draw's error moves by up to 2x with the rounding of
    the convolution itself)."""
    errors = {"published": 0.0, impl: 0.0}
    for seed in range(3):
        torch.manual_seed(seed)
        layer = ODConv2d(256, 256, 3, padding=1, kernel_num=4).train()
        x = torch.randn(2, 256, 20, 24) + torch.randn(2, 256, 1, 1)
        g = torch.randn(2, 256, 20, 24)

        def grads(impl, dtype):
            layer.to(dtype).zero_grad(set_to_none=True)
            layer.impl = impl
            (layer(x.to(dtype)) * g.to(dtype)).sum().backward()
            return {n: p.grad for n, p in layer.attention.kernel_fc.named_parameters()}

        ref = grads("batch_groups", torch.float64)
        for key, name in (("published", "batch_groups"), (impl, impl)):
            errors[key] += sum(rel_error(t, ref[n]) for n, t in grads(name, torch.float32).items())
    assert errors[impl] <= 2 * errors["published"], errors


@pytest.mark.cuda
@pytest.mark.parametrize("impl", GENERAL_IMPLS)
def test_every_formulation_on_cuda_equals_the_cpu(impl):
    torch.manual_seed(0)
    m = ODConv2d(16, 16, 3, padding=1, kernel_num=4, impl=impl).train()
    x = torch.randn(2, 16, 9, 11)
    out_cpu = m(x)
    out_cpu.square().sum().backward()
    grads_cpu = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    mc = m.cuda()
    out_cuda = mc(x.cuda())
    out_cuda.square().sum().backward()
    torch.testing.assert_close(out_cuda.cpu(), out_cpu, atol=1e-4, rtol=1e-4)
    for g, p in zip(grads_cpu, mc.parameters()):
        torch.testing.assert_close(p.grad.cpu(), g, atol=1e-3, rtol=1e-3)
