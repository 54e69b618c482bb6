"""Dynamic mask heads reproduce the reference fixtures, in both formulations."""
import pytest
import torch

from condseg.layers import aligned_bilinear, compute_locations, dice_loss
from condseg.layers.dynamic_conv import (
    IMPLS,
    dynamic_layer_shapes,
    dynamic_mask_heads,
    dynamic_param_counts,
    parse_dynamic_params,
    relative_coords,
)


def _run(d, impl, rel=True, dtype=torch.float32, requires_grad=False):
    params = d["mask_head_params"].to(dtype).requires_grad_(requires_grad)
    feats = d["mask_feats"].to(dtype).requires_grad_(requires_grad)
    shapes = dynamic_layer_shapes(8, 8, 3, rel)
    soi = torch.tensor([64.0, 128, 256, 512, 1024])[d["fpn_levels"]] if rel else None
    low = dynamic_mask_heads(
        feats, params, d["im_inds"], d.get("locations"), soi, shapes, mask_feat_stride=8, rel_coords=rel, impl=impl
    )
    return params, feats, low, aligned_bilinear(low, 2)


def test_param_counts_match_fixture(fixture):
    counts = fixture("condinst", "dynamic_param_counts.json")
    for c in counts["configs"]:
        w, b = dynamic_param_counts(c["mask_branch_out_channels"], c["mask_head_channels"], c["num_layers"], c["rel_coords"])
        assert (w, b) == (c["weight_nums"], c["bias_nums"]), c
        assert sum(w) + sum(b) == c["num_gen_params"]


def test_parse_dynamic_params_matches_fixture(fixture):
    d = fixture("condinst", "dynamic_mask_head.pt")
    weights, biases = parse_dynamic_params(d["mask_head_params"], dynamic_layer_shapes(8, 8, 3, True))
    for k in range(3):  # the reference lays instances out along the output channels of a grouped conv
        assert torch.equal(weights[k].reshape(-1, weights[k].shape[2], 1, 1), d[f"weight_{k}"])
        assert torch.equal(biases[k].reshape(-1), d[f"bias_{k}"])


def test_relative_coords_match_fixture(fixture):
    d = fixture("condinst", "dynamic_mask_head.pt")
    grid = compute_locations(20, 24, 8)
    assert torch.equal(grid, d["grid_locations"])
    assert torch.equal(relative_coords(d["locations"], d["instance_soi"], grid), d["relative_coords"])


def test_one_layer_head_is_rejected():
    with pytest.raises(ValueError, match="NUM_LAYERS"):
        dynamic_layer_shapes(8, 8, 1)


@pytest.mark.parametrize("impl", IMPLS)
def test_forward_matches_fixture(fixture, impl):
    d = fixture("condinst", "dynamic_mask_head.pt")
    _, _, low, logits = _run(d, impl)
    torch.testing.assert_close(low, d["mask_logits_lowres"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, d["mask_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits.sigmoid(), d["mask_scores"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_forward_float64_matches_fixture(fixture, impl):
    d = fixture("condinst", "dynamic_mask_head.pt")
    _, _, low, logits = _run(d, impl, dtype=torch.float64)
    torch.testing.assert_close(low, d["mask_logits_lowres_f64"], atol=1e-10, rtol=0)
    torch.testing.assert_close(logits, d["mask_logits_f64"], atol=1e-10, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_forward_without_relative_coords_matches_fixture(fixture, impl):
    d = fixture("condinst", "dynamic_mask_head_norel.pt")
    _, _, low, logits = _run(d, impl, rel=False)
    torch.testing.assert_close(low, d["mask_logits_lowres"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, d["mask_logits"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_dice_loss_and_gradients_match_fixture(fixture, impl):
    d = fixture("condinst", "dynamic_mask_head.pt")
    params, feats, _, logits = _run(d, impl, requires_grad=True)
    per_instance = dice_loss(logits.sigmoid(), d["gt_bitmasks"][d["gt_inds"]])
    torch.testing.assert_close(per_instance, d["per_instance_dice_loss"], atol=1e-6, rtol=1e-5)
    loss = per_instance.mean()
    torch.testing.assert_close(loss, d["loss_mask"], atol=1e-6, rtol=1e-5)
    loss.backward()
    torch.testing.assert_close(params.grad, d["grad_mask_head_params"], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(feats.grad, d["grad_mask_feats"], atol=1e-6, rtol=1e-4)


def test_formulations_agree_on_many_instances_and_unsorted_images():
    torch.manual_seed(0)
    feats = torch.randn(3, 8, 12, 16, dtype=torch.float64, requires_grad=True)
    params = (0.5 * torch.randn(40, 169, dtype=torch.float64)).requires_grad_()
    im_inds = torch.randint(0, 3, (40,))
    im_inds[:3] = torch.tensor([2, 0, 1])
    locations = torch.randint(0, 128, (40, 2)).to(torch.float64)  # pixel centres: exact in float32 too
    soi = torch.tensor([64.0, 128, 256, 512, 1024], dtype=torch.float64)[torch.randint(0, 5, (40,))]
    shapes = dynamic_layer_shapes(8, 8, 3)
    outs = []
    for impl in IMPLS:
        out = dynamic_mask_heads(feats, params, im_inds, locations, soi, shapes, impl=impl)
        grads = torch.autograd.grad((out.sin()).sum(), (feats, params))
        outs.append((out, *grads))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_instances_give_empty_masks_connected_to_the_graph(impl):
    feats = torch.randn(2, 8, 6, 7, requires_grad=True)
    params = torch.zeros(0, 169, requires_grad=True)
    out = dynamic_mask_heads(feats, params, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 2), torch.zeros(0),
                             dynamic_layer_shapes(8, 8, 3), impl=impl)
    assert out.shape == (0, 1, 6, 7)
    out.sum().backward()
    assert feats.grad is not None and params.grad is not None


def test_aligned_bilinear_matches_fixture(fixture):
    d = fixture("condinst", "aligned_bilinear.pt")
    for k in range(d["num_cases"]):
        for f in d["factors"]:
            torch.testing.assert_close(aligned_bilinear(d[f"case{k}_input"], f), d[f"case{k}_factor{f}"], atol=1e-6, rtol=0)
    for f in d["factors"]:
        torch.testing.assert_close(aligned_bilinear(d["case1_f64_input"], f), d[f"case1_f64_factor{f}"], atol=1e-10, rtol=0)


def test_dice_loss_matches_fixture(fixture):
    d = fixture("condinst", "dice_loss.pt")
    logits = d["logits"].clone().requires_grad_()
    per_instance = dice_loss(logits.sigmoid(), d["gt_bitmasks"], eps=d["eps"])
    torch.testing.assert_close(per_instance, d["per_instance_loss"], atol=1e-6, rtol=1e-5)
    per_instance.mean().backward()
    torch.testing.assert_close(logits.grad, d["grad_logits_of_mean"], atol=1e-6, rtol=1e-4)
    assert per_instance[5].item() == 1.0  # empty target




@pytest.mark.parametrize("factor", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(5, 7), (1, 4), (3, 1)])
def test_aligned_bilinear_adjoint_is_the_transpose(factor, size):
    """<A x, g> == <x, A^T g> for the explicit adjoint, and the backward (which is that
    adjoint) and its own backward pass gradcheck / gradgradcheck."""
    from condseg.layers.geometry import aligned_bilinear_adjoint

    torch.manual_seed(factor)
    x = torch.randn(2, 1, *size, dtype=torch.float64, requires_grad=True)
    y = aligned_bilinear(x, factor)
    grad = torch.randn_like(y)
    lhs = (y * grad).sum()
    rhs = (x * aligned_bilinear_adjoint(grad, factor)).sum()
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=1e-12)
    assert torch.autograd.gradcheck(lambda t: aligned_bilinear(t, factor), (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda t: aligned_bilinear(t, factor), (x,), fast_mode=True)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_aligned_bilinear_equals_the_interpolate_formulation(factor):
    """The published computation: replicate-pad 1 at the bottom/right, bilinear
    interpolation with aligned corners to ``factor * n + 1``, replicate-pad ``factor // 2``
    at the top/left, crop to ``factor * n``."""
    import torch.nn.functional as F

    torch.manual_seed(factor)
    x = torch.randn(2, 3, 6, 9, dtype=torch.float64)
    h, w = x.shape[2:]
    y = F.pad(x, (0, 1, 0, 1), mode="replicate")
    y = F.interpolate(y, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    y = F.pad(y, (factor // 2, 0, factor // 2, 0), mode="replicate")[:, :, : factor * h, : factor * w]
    torch.testing.assert_close(aligned_bilinear(x, factor), y, atol=1e-12, rtol=0)
