"""The fused, blocked dynamic-head dice loss equals the unfused computation (fixtures,
gradients, any incoming gradient, gradcheck)."""
import pytest
import torch

from condseg.layers import aligned_bilinear, dice_loss, dynamic_layer_shapes, dynamic_mask_dice_loss, dynamic_mask_heads

SOI = torch.tensor([64.0, 128, 256, 512, 1024])


def _fixture_inputs(d, dtype=torch.float32):
    params = d["mask_head_params"].to(dtype).requires_grad_(True)
    feats = d["mask_feats"].to(dtype).requires_grad_(True)
    targets = d["gt_bitmasks"][d["gt_inds"]][:, None].to(dtype)
    return params, feats, d["im_inds"], d["locations"].to(dtype), SOI[d["fpn_levels"]].to(dtype), targets


@pytest.mark.parametrize("block", [1, 2, 8])
def test_fused_loss_matches_fixture_losses_and_gradients(fixture, block):
    d = fixture("condinst", "dynamic_mask_head.pt")
    params, feats, im_inds, locations, soi, targets = _fixture_inputs(d)
    losses = dynamic_mask_dice_loss(
        feats, params, im_inds, locations, soi, dynamic_layer_shapes(8, 8, 3), targets, block=block
    )
    torch.testing.assert_close(losses, d["per_instance_dice_loss"], atol=1e-6, rtol=1e-5)
    losses.mean().backward()
    torch.testing.assert_close(params.grad, d["grad_mask_head_params"], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(feats.grad, d["grad_mask_feats"], atol=1e-6, rtol=1e-4)


def _random_case(n, b=2, c=4, h=5, w=6, layers=3, rel=True, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shapes = dynamic_layer_shapes(c, 3, layers, rel)
    num = sum(o * i + o for o, i in shapes)
    params = torch.randn(n, num, generator=g, dtype=dtype).requires_grad_(True)
    feats = torch.randn(b, c, h, w, generator=g, dtype=dtype).requires_grad_(True)
    im_inds = torch.randint(0, b, (n,), generator=g)
    locations = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([8.0 * w, 8.0 * h], dtype=dtype)
    soi = SOI[torch.randint(0, 5, (n,), generator=g)].to(dtype)
    targets = (torch.rand(n, 1, 2 * h, 2 * w, generator=g) > 0.5).to(dtype)
    return params, feats, im_inds, locations, soi, shapes, targets


def _unfused(params, feats, im_inds, locations, soi, shapes, targets, rel=True):
    # bmm: float64 throughout (the grouped form computes relative coordinates in float32)
    low = dynamic_mask_heads(feats, params, im_inds, locations, soi, shapes, 8, rel, "bmm")
    return dice_loss(aligned_bilinear(low, 2).sigmoid(), targets)


def _fused(params, feats, im_inds, locations, soi, shapes, targets, rel=True):
    return dynamic_mask_dice_loss(feats, params, im_inds, locations, soi, shapes, targets, rel_coords=rel, block=3)


@pytest.mark.parametrize("layers,rel", [(2, True), (3, False), (4, True)])
def test_fused_loss_equals_unfused_for_any_incoming_gradient(layers, rel):
    """Uniform weights per image use the gradients stored in the forward; any other
    weights recompute: both exact."""
    case = _random_case(7, layers=layers, rel=rel)
    params, feats, im_inds = case[:3]
    expected = _unfused(*case, rel=rel)
    got = _fused(*case, rel=rel)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    per_image_uniform = torch.tensor([0.5, 2.0])[im_inds].double()
    for weights in (per_image_uniform, torch.linspace(-1, 2, 7, dtype=torch.float64)):
        ref = torch.autograd.grad((expected * weights).sum(), (params, feats), retain_graph=True)
        fused = _fused(*case, rel=rel)
        ours = torch.autograd.grad((fused * weights).sum(), (params, feats))
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_fused_loss_gradcheck():
    params, feats, im_inds, locations, soi, shapes, targets = _random_case(4, h=3, w=4)
    assert torch.autograd.gradcheck(
        lambda p, f: dynamic_mask_dice_loss(f, p, im_inds, locations, soi, shapes, targets, block=3),
        (params, feats),
    )


def test_fused_loss_without_instances_is_empty_and_connected():
    params, feats, im_inds, locations, soi, shapes, targets = _random_case(0)
    losses = dynamic_mask_dice_loss(feats, params, im_inds, locations, soi, shapes, targets)
    assert losses.shape == (0,)
    (losses.sum() + 0).backward()
    assert feats.grad is not None and not feats.grad.any()


def test_fused_loss_checks_the_target_shape():
    params, feats, im_inds, locations, soi, shapes, targets = _random_case(3)
    with pytest.raises(ValueError, match="targets of shape"):
        dynamic_mask_dice_loss(feats, params, im_inds, locations, soi, shapes, targets[:, :, :-1])
