"""Deformable convolution (DCNv1/DCNv2) matches a direct bilinear-sampling reference, in
both formulations (torchvision's op and grid_sample + GEMM), which agree with each other."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condseg.layers import DeformConv2d, DeformConvWithOffset, offset_predictor, split_offset_mask
from condseg.layers import deform_conv, deform_conv_grid_sample
from condseg.layers.deform_conv import IMPLS


def _bilinear_zero_padded(img, y, x):
    """``img`` [C, H, W] sampled at real position (y, x); pixels outside the image are 0."""
    _, h, w = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = img.new_zeros(img.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def _reference_deform_conv(x, offset, weight, bias, stride, padding, dilation, mask):
    """Direct definition: for every output position and kernel tap, sample the input at
    the regular grid point plus (dy, dx) = offset channels (g*2K + 2t, g*2K + 2t + 1),
    scale by mask channel g*K + t, then contract with the weights group by group."""
    n, c, _, _ = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups = c // c_per_group
    taps = kh * kw
    dgroups = offset.shape[1] // (2 * taps)
    c_per_dgroup = c // dgroups
    h_out, w_out = offset.shape[2:]
    cols = x.new_zeros(n, c, taps, h_out, w_out)
    for b in range(n):
        for g in range(dgroups):
            chans = slice(g * c_per_dgroup, (g + 1) * c_per_dgroup)
            for i in range(kh):
                for j in range(kw):
                    t = i * kw + j
                    for oy in range(h_out):
                        for ox in range(w_out):
                            dy = offset[b, g * 2 * taps + 2 * t, oy, ox].item()
                            dx = offset[b, g * 2 * taps + 2 * t + 1, oy, ox].item()
                            py = oy * stride[0] - padding[0] + i * dilation[0] + dy
                            px = ox * stride[1] - padding[1] + j * dilation[1] + dx
                            v = _bilinear_zero_padded(x[b, chans], py, px)
                            if mask is not None:
                                v = v * mask[b, g * taps + t, oy, ox]
                            cols[b, chans, t, oy, ox] = v
    out = []
    per_out = c_out // groups
    for gi in range(groups):
        cg = cols[:, gi * c_per_group : (gi + 1) * c_per_group]
        wg = weight[gi * per_out : (gi + 1) * per_out].reshape(per_out, c_per_group, taps)
        out.append(torch.einsum("nctyx,oct->noyx", cg, wg))
    out = torch.cat(out, dim=1)
    return out if bias is None else out + bias[None, :, None, None]


CONFIGS = {
    # name: (c_in, c_out, kernel, stride, padding, dilation, groups, deformable_groups, bias, modulated)
    "3x3_pad1_mask": (4, 6, 3, 1, 1, 1, 1, 1, False, True),
    "stride2_dilation2_bias_nomask": (4, 6, 3, 2, 2, 2, 1, 1, True, False),
    "groups2_dgroups2_rect_kernel": (4, 6, (2, 3), (2, 1), (1, 0), 1, 2, 2, True, True),
    "dgroups_per_channel": (4, 2, 3, 1, 0, (1, 2), 1, 4, False, True),
}


def _inputs(conv, n=2, h=6, w=7, offset_scale=2.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    taps = conv.deformable_groups * conv.kernel_size[0] * conv.kernel_size[1]
    h_out, w_out = conv.output_size(h, w)
    x = torch.randn(n, conv.in_channels, h, w, generator=g, dtype=torch.float64)
    # fractional, and large enough that many taps land partly or fully outside the image
    offset = offset_scale * torch.randn(n, 2 * taps, h_out, w_out, generator=g, dtype=torch.float64)
    mask = torch.rand(n, taps, h_out, w_out, generator=g, dtype=torch.float64)
    return x, offset, mask


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_bilinear_sampling_reference(name, impl):
    c_in, c_out, k, s, p, d, groups, dgroups, bias, modulated = CONFIGS[name]
    conv = DeformConv2d(c_in, c_out, k, s, p, d, groups, dgroups, bias=bias, impl=impl).double()
    if bias:
        nn.init.normal_(conv.bias)
    x, offset, mask = _inputs(conv)
    mask = mask if modulated else None
    assert (offset.abs() > 3).any()  # some samples are out of the image
    got = conv(x, offset, mask)
    want = _reference_deform_conv(x, offset, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, mask)
    assert got.shape == (2, c_out, *conv.output_size(6, 7))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_zero_offsets_and_unit_mask_equal_plain_conv(name, impl):
    c_in, c_out, k, s, p, d, groups, dgroups, bias, _ = CONFIGS[name]
    conv = DeformConv2d(c_in, c_out, k, s, p, d, groups, dgroups, bias=bias, impl=impl).double()
    x, offset, mask = _inputs(conv)
    want = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, groups)
    torch.testing.assert_close(conv(x, torch.zeros_like(offset)), want, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(conv(x, torch.zeros_like(offset), torch.ones_like(mask)), want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_odd_offset_channels_shift_sampling_in_x_and_even_channels_in_y(impl):
    conv = DeformConv2d(3, 5, 3, impl=impl).double()  # padding 0: every regular tap is inside the image
    x, offset, _ = _inputs(conv)
    plain = lambda inp: F.conv2d(inp, conv.weight)  # noqa: E731
    dx = torch.zeros_like(offset)
    dx[:, 1::2] = 1.0  # +1 pixel in x for every tap: samples x[..., col + 1]
    shifted_x = F.pad(x[..., :, 1:], (0, 1))
    torch.testing.assert_close(conv(x, dx), plain(shifted_x), atol=1e-12, rtol=0)
    dy = torch.zeros_like(offset)
    dy[:, 0::2] = 1.0  # +1 pixel in y: samples x[..., row + 1, :]
    shifted_y = F.pad(x[..., 1:, :], (0, 0, 0, 1))
    torch.testing.assert_close(conv(x, dy), plain(shifted_y), atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("modulated", [True, False])
def test_gradcheck_wrt_input_offset_mask_weight_and_bias(modulated, impl):
    conv = DeformConv2d(4, 2, 3, padding=1, groups=2, deformable_groups=2, bias=True, impl=impl).double()
    x, offset, mask = _inputs(conv, n=1, h=3, w=4, offset_scale=1.0, seed=1)
    # keep sampling points off integer coordinates, where bilinear sampling has kinks
    offset = offset.trunc() + offset.sign() * (0.2 + 0.6 * offset.frac().abs())
    mask = 0.1 + 0.8 * mask if modulated else None

    def fn(x, offset, weight, bias, *mask):
        params = {"weight": weight, "bias": bias}
        return torch.func.functional_call(conv, params, (x, offset, *mask))

    args = (x, offset, conv.weight.detach(), conv.bias.detach()) + ((mask,) if modulated else ())
    assert torch.autograd.gradcheck(fn, [a.clone().requires_grad_(True) for a in args])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bias", [False, True])
def test_fresh_modulated_block_is_half_the_plain_conv(bias, impl):
    block = DeformConvWithOffset(4, 6, 3, stride=2, padding=1, bias=bias, modulated=True, impl=impl).double()
    assert block.conv.impl == impl
    nn.init.normal_(block.conv.bias) if bias else None
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    conv = block.conv
    plain = F.conv2d(x, conv.weight, None, conv.stride, conv.padding)
    want = 0.5 * plain + (conv.bias[None, :, None, None] if bias else 0)
    torch.testing.assert_close(block(x), want, atol=1e-12, rtol=1e-10)


def test_fresh_unmodulated_block_is_exactly_the_plain_conv():
    block = DeformConvWithOffset(4, 6, 3, padding=2, dilation=2, deformable_groups=2, modulated=False).double()
    assert block.conv_offset.out_channels == 2 * 2 * 9
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    want = F.conv2d(x, block.conv.weight, None, 1, 2, 2)
    torch.testing.assert_close(block(x), want, atol=1e-12, rtol=1e-10)


def test_zero_initialised_predictor_still_gets_gradients():
    block = DeformConvWithOffset(3, 4, 3, padding=1, deformable_groups=1)
    assert block.conv_offset.out_channels == 27
    assert not block.conv_offset.weight.any() and not block.conv_offset.bias.any()
    block(torch.randn(2, 3, 6, 6)).square().sum().backward()
    assert block.conv_offset.weight.grad.abs().sum() > 0
    assert block.conv_offset.bias.grad[:18].abs().sum() > 0  # offsets
    assert block.conv_offset.bias.grad[18:].abs().sum() > 0  # mask logits


def test_block_forwards_its_arguments_to_the_conv_and_its_geometry_to_the_predictor():
    block = DeformConvWithOffset(8, 6, (3, 1), 2, (1, 0), 1, 2, 2, True, None, torch.relu, "torchvision", modulated=False)
    conv, pred = block.conv, block.conv_offset
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (8, 6, (3, 1), (2, 2), (1, 0))
    assert (conv.groups, conv.deformable_groups, conv.activation, conv.impl) == (2, 2, torch.relu, "torchvision")
    assert conv.bias is not None and not block.modulated
    assert (pred.in_channels, pred.out_channels, pred.kernel_size, pred.stride, pred.padding) == (8, 2 * 2 * 3, (3, 1), (2, 2), (1, 0))
    assert list(block.state_dict()) == ["conv_offset.weight", "conv_offset.bias", "conv.weight", "conv.bias"]
    with pytest.raises(TypeError, match="padd"):
        DeformConvWithOffset(4, 4, 3, padd=1)


def test_split_offset_mask_takes_offsets_first_then_sigmoid_mask_or_no_mask():
    pred = offset_predictor(5, 3, padding=1, deformable_groups=2)
    assert isinstance(pred, nn.Conv2d) and pred.out_channels == 54
    raw = torch.randn(2, 54, 3, 4)
    offset, mask = split_offset_mask(raw)
    assert offset.shape == (2, 36, 3, 4) and mask.shape == (2, 18, 3, 4)
    torch.testing.assert_close(offset, raw[:, :36])
    torch.testing.assert_close(mask, raw[:, 36:].sigmoid())
    with pytest.raises(ValueError, match=r"3 \* G \* K"):
        split_offset_mask(raw[:, :53])
    offset, mask = split_offset_mask(raw[:, :36], modulated=False)
    assert offset is not None and mask is None
    torch.testing.assert_close(offset, raw[:, :36])


def test_norm_submodule_and_activation_follow_the_conv():
    conv = DeformConv2d(3, 4, 3, padding=1, norm=nn.GroupNorm(2, 4), activation=F.relu)
    block = DeformConvWithOffset(3, 4, 3, padding=1, norm=nn.BatchNorm2d(4))
    assert {"weight", "norm.weight", "norm.bias"} == set(conv.state_dict())
    assert {"conv_offset.weight", "conv_offset.bias", "conv.weight", "conv.norm.weight"} <= set(block.state_dict())
    x = torch.randn(2, 3, 5, 5)
    offset = torch.randn(2, 18, 5, 5)
    raw = DeformConv2d(3, 4, 3, padding=1)
    raw.weight.data.copy_(conv.weight.data)
    torch.testing.assert_close(conv(x, offset), F.relu(conv.norm(raw(x, offset))))


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch_forward_and_backward(impl):
    block = DeformConvWithOffset(3, 4, 3, padding=1, bias=True, impl=impl)
    x = torch.randn(0, 3, 5, 6, requires_grad=True)
    y = block(x)
    assert y.shape == (0, 4, 5, 6)
    y.sum().backward()
    assert x.grad.shape == x.shape and not block.conv.weight.grad.any()


def test_wrong_offset_and_mask_shapes_raise_with_expected_and_got():
    conv = DeformConv2d(4, 4, 3, padding=1, deformable_groups=2)
    x = torch.randn(2, 4, 5, 5)
    offset = torch.zeros(2, 36, 5, 5)
    with pytest.raises(ValueError, match=r"offset must have shape .*\[2, 36, 5, 5\].*got \[2, 18, 5, 5\]"):
        conv(x, offset[:, :18])
    with pytest.raises(ValueError, match=r"offset must have shape .*\[2, 36, 5, 5\].*got \[2, 36, 3, 3\]"):
        conv(x, offset[..., :3, :3])
    with pytest.raises(ValueError, match=r"mask must have shape .*\[2, 18, 5, 5\].*got \[2, 9, 5, 5\]"):
        conv(x, offset, torch.ones(2, 9, 5, 5))
    with pytest.raises(ValueError, match=r"mask must have shape .*\[2, 18, 5, 5\].*got \[1, 18, 5, 5\]"):
        conv(x, offset, torch.ones(1, 18, 5, 5))
    with pytest.raises(ValueError, match=r"x must have shape \[N, 4, H, W\], got \[2, 3, 5, 5\]"):
        conv(x[:, :3], offset)
    with pytest.raises(ValueError, match="divisible by deformable_groups"):
        DeformConv2d(4, 4, 3, deformable_groups=3)


# (c_in, c_out, kernel, stride, padding, dilation, groups, deformable_groups)
AGREE_CONFIGS = {
    "stride2_pad1_groups2_dgroups2": (8, 6, 3, 2, 1, 1, 2, 2),
    "rect_dilated_groups4_dgroups4": (8, 4, (3, 2), (1, 2), (2, 1), (2, 1), 4, 4),
    "dgroups2_groups1": (6, 5, 3, 1, 0, 1, 1, 2),
}


def _impl_outputs_and_grads(conv, impl, x, offset, mask, grad_y):
    conv.impl = impl
    leaves = [t.clone().requires_grad_(True) for t in (x, offset) + (() if mask is None else (mask,))]
    conv.zero_grad()
    y = conv(*leaves)
    y.backward(grad_y)
    return [y] + [t.grad for t in leaves] + [conv.weight.grad, conv.bias.grad]


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("modulated", [True, False])
@pytest.mark.parametrize("name", list(AGREE_CONFIGS))
def test_impls_agree_on_outputs_and_all_gradients(name, modulated, chunked, monkeypatch):
    if chunked:  # grid_sample over the batch in chunks of one sample
        monkeypatch.setattr(deform_conv_grid_sample, "GRID_SAMPLE_MAX_ELEMENTS", 1)
    c_in, c_out, k, s, p, d, groups, dgroups = AGREE_CONFIGS[name]
    conv = DeformConv2d(c_in, c_out, k, s, p, d, groups, dgroups, bias=True).double()
    nn.init.normal_(conv.bias)
    x, offset, mask = _inputs(conv, n=3, h=7, w=9, offset_scale=3.0, seed=2)
    h_out, w_out = conv.output_size(7, 9)
    assert (offset.abs() > 4).any()  # ~40% of the samples fall entirely outside, ~20% straddle the border
    grad_y = torch.randn(3, c_out, h_out, w_out, dtype=torch.float64)
    mask = mask if modulated else None
    want = _impl_outputs_and_grads(conv, "torchvision", x, offset, mask, grad_y)
    got = _impl_outputs_and_grads(conv, "grid_sample", x, offset, mask, grad_y)
    names = ["output", "grad x", "grad offset"] + (["grad mask"] if modulated else []) + ["grad weight", "grad bias"]
    for what, g, w in zip(names, got, want):
        torch.testing.assert_close(g, w, atol=1e-11, rtol=1e-10, msg=lambda m: f"{what}: {m}")


def test_impls_agree_in_float32_and_grid_sample_runs_bfloat16():
    conv = DeformConv2d(16, 8, 3, padding=1, deformable_groups=2, bias=True)
    x, offset, mask = (t.float() for t in _inputs(conv, n=2, h=12, w=10, offset_scale=2.0, seed=3))
    conv.impl = "torchvision"
    want = conv(x, offset, mask)
    conv.impl = "grid_sample"
    torch.testing.assert_close(conv(x, offset, mask), want, atol=1e-5, rtol=1e-4)
    y16 = conv.bfloat16()(x.bfloat16(), offset.bfloat16(), mask.bfloat16())
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), want, atol=0.1, rtol=0.05)


def test_impl_argument_auto_rule_and_unknown_name():
    assert IMPLS == ("torchvision", "grid_sample")
    conv = DeformConv2d(4, 4, 3, padding=1)
    assert conv.impl == "auto" and "impl=auto" in repr(conv)
    assert conv.resolved_impl(torch.zeros(1, 4, 5, 5)) == "grid_sample"  # CPU
    assert deform_conv._auto_impl(torch.device("cuda")) == "torchvision"
    assert DeformConv2d(4, 4, 3, impl="torchvision").resolved_impl(torch.zeros(1, 4, 5, 5)) == "torchvision"
    with pytest.raises(ValueError, match=r"impl must be 'auto' or one of \('torchvision', 'grid_sample'\), got 'cuda'"):
        DeformConv2d(4, 4, 3, impl="cuda")
    with pytest.raises(ValueError, match="got 'nope'"):
        DeformConvWithOffset(4, 4, 3, impl="nope")
    conv.impl = "torchvison"  # reassigned on a built layer: checked again at forward
    with pytest.raises(ValueError, match="got 'torchvison'"):
        conv(torch.zeros(1, 4, 5, 5), torch.zeros(1, 18, 5, 5))


# (c_in, c_out, kernel, stride, padding, dilation, groups, deformable_groups, x size)
LATTICE_CONFIGS = {
    "3x3_pad1_odd_size": (4, 5, 3, 1, 1, 1, 1, 1, (9, 11)),
    "3x3_stride2_dilation2_groups2_dgroups2": (4, 6, 3, 2, 2, 2, 2, 2, (7, 13)),
    "5x5_pad2_power_of_two_size": (3, 4, 5, 1, 2, 1, 1, 1, (8, 16)),
    "1x1": (4, 3, 1, 1, 0, 1, 1, 1, (5, 6)),
}


def _positions_offset(conv, n, h, w, positions, seed):
    """Offsets putting every tap at a position drawn from ``positions`` (pairs (y, x) of
    pixel coordinates), whatever the tap's place on the regular grid."""
    g = torch.Generator().manual_seed(seed)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    h_out, w_out = conv.output_size(h, w)
    taps = kh * kw
    base_y = (torch.arange(kh)[:, None, None, None] * dh + torch.arange(h_out)[None, None, :, None] * sh - ph)
    base_x = (torch.arange(kw)[None, :, None, None] * dw + torch.arange(w_out)[None, None, None, :] * sw - pw)
    base_y = base_y.expand(kh, kw, h_out, w_out).reshape(taps, h_out, w_out).double()
    base_x = base_x.expand(kh, kw, h_out, w_out).reshape(taps, h_out, w_out).double()
    shape = (n, conv.deformable_groups, taps, h_out, w_out)
    py = positions[0][torch.randint(len(positions[0]), shape, generator=g)]
    px = positions[1][torch.randint(len(positions[1]), shape, generator=g)]
    offset = torch.stack((py - base_y, px - base_x), dim=3)  # [N, G, K, 2, H_out, W_out]: dy, dx per tap
    return offset.reshape(n, 2 * conv.deformable_groups * taps, h_out, w_out)


def _lattice(size):
    """Integer and half-integer positions of an axis of ``size`` pixels, its borders
    (-1, size - 1, size), just outside them, and far outside."""
    return torch.tensor([-30.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 2.5, size - 1.5, size - 1.0, size - 0.5,
                         float(size), size + 0.5, size + 1.0, size + 40.0], dtype=torch.float64)


@pytest.mark.parametrize("positions", ["zero_offsets", "integer_offsets", "lattice"])
@pytest.mark.parametrize("name", list(LATTICE_CONFIGS))
def test_offset_and_mask_gradients_equal_torchvision_at_integer_positions(name, positions):
    """At integer and half-integer sampling positions bilinear sampling has kinks, and
    torchvision's offset gradient is the difference towards the next pixel (the floor of
    the position and the one after it). grid_sample must take the same side, including at
    -1 and at the last row and column."""
    c_in, c_out, k, s, p, d, groups, dgroups, (h, w) = LATTICE_CONFIGS[name]
    conv = DeformConv2d(c_in, c_out, k, s, p, d, groups, dgroups, bias=True).double()
    x, offset, mask = _inputs(conv, n=2, h=h, w=w, seed=5)
    if positions == "zero_offsets":
        offset = torch.zeros_like(offset)
    elif positions == "integer_offsets":
        offset = torch.randint(-3, 4, offset.shape, generator=torch.Generator().manual_seed(6)).double()
    else:
        offset = _positions_offset(conv, 2, h, w, (_lattice(h), _lattice(w)), seed=7)
    grad_y = torch.randn(2, c_out, *conv.output_size(h, w), dtype=torch.float64)
    want = _impl_outputs_and_grads(conv, "torchvision", x, offset, mask, grad_y)
    got = _impl_outputs_and_grads(conv, "grid_sample", x, offset, mask, grad_y)
    assert want[2].abs().max() > 0.1  # the offset gradient is not trivially zero
    for what, g, w_ in zip(["output", "grad x", "grad offset", "grad mask", "grad weight", "grad bias"], got, want):
        torch.testing.assert_close(g, w_, atol=1e-10, rtol=1e-10, msg=lambda m: f"{what}: {m}")


def test_float32_offset_gradient_at_zero_offsets_is_torchvisions():
    """The float32 case of the above, what a DCN layer's first training step sees: the
    offset gradient agrees to rounding, not merely on most entries."""
    conv = DeformConv2d(16, 8, 3, padding=1, bias=True)
    x, offset, mask = (t.float() for t in _inputs(conv, n=2, h=13, w=19, seed=8))
    grad_y = torch.randn(2, 8, 13, 19)
    want = _impl_outputs_and_grads(conv, "torchvision", x, torch.zeros_like(offset), mask, grad_y)
    got = _impl_outputs_and_grads(conv, "grid_sample", x, torch.zeros_like(offset), mask, grad_y)
    for what, g, w_ in zip(["output", "grad x", "grad offset", "grad mask", "grad weight", "grad bias"], got, want):
        assert (g - w_).abs().max() <= 1e-4 * w_.abs().max(), what


@pytest.mark.cuda
@pytest.mark.parametrize("impl", IMPLS)
def test_every_formulation_on_cuda_equals_torchvision_on_the_cpu(impl):
    torch.manual_seed(0)
    conv = DeformConv2d(8, 8, 3, padding=1, impl="torchvision")
    x, offset, mask = torch.randn(2, 8, 9, 11), 2.5 * torch.randn(2, 18, 9, 11), torch.rand(2, 9, 9, 11)
    expected = conv(x, offset, mask)
    conv.impl = impl
    conv = conv.cuda()
    out = conv(x.cuda(), offset.cuda(), mask.cuda())
    torch.testing.assert_close(out.cpu(), expected, atol=1e-4, rtol=1e-4)
