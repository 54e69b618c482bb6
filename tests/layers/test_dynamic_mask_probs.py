"""The blocked inference masks equal the unblocked heads + upsampling + sigmoid (fixture,
float64, any block size, instances in any image order, empty input)."""
import pytest
import torch

from condseg.layers import aligned_bilinear, dynamic_layer_shapes, dynamic_mask_heads, dynamic_mask_probs

SOI = torch.tensor([64.0, 128, 256, 512, 1024])


def _random_case(n, b=3, c=4, h=5, w=7, layers=3, rel=True, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shapes = dynamic_layer_shapes(c, 3, layers, rel)
    params = torch.randn(n, sum(o * i + o for o, i in shapes), generator=g, dtype=dtype)
    feats = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    im_inds = torch.randint(0, b, (n,), generator=g)  # unsorted, and some image may have none
    locations = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([8.0 * w, 8.0 * h], dtype=dtype)
    soi = SOI[torch.randint(0, 5, (n,), generator=g)].to(dtype)
    return feats, params, im_inds, locations, soi, shapes


def test_probs_match_fixture_mask_scores(fixture):
    d = fixture("condinst", "dynamic_mask_head.pt")
    probs = dynamic_mask_probs(
        d["mask_feats"], d["mask_head_params"], d["im_inds"], d["locations"], SOI[d["fpn_levels"]],
        dynamic_layer_shapes(8, 8, 3), block=3,
    )
    torch.testing.assert_close(probs, d["mask_scores"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("in_image_order", [False, True])  # True: written straight into the output
@pytest.mark.parametrize("block", [1, 2, 5, 64])
@pytest.mark.parametrize("layers,rel,factor", [(2, True, 2), (3, False, 4), (4, True, 1)])
def test_probs_equal_unblocked_heads(block, layers, rel, factor, in_image_order):
    feats, params, im_inds, locations, soi, shapes = _random_case(11, layers=layers, rel=rel)
    if in_image_order:
        im_inds = im_inds.sort().values
    expected = aligned_bilinear(
        dynamic_mask_heads(feats, params, im_inds, locations, soi, shapes, 8, rel, "bmm"), factor
    ).sigmoid()
    probs = dynamic_mask_probs(feats, params, im_inds, locations, soi, shapes, 8, factor, rel, block=block)
    assert probs.shape == (11, 1, factor * 5, factor * 7)
    torch.testing.assert_close(probs, expected, atol=1e-12, rtol=0)


def test_probs_without_gradients_even_from_leaves_that_want_them():
    feats, params, im_inds, locations, soi, shapes = _random_case(4)
    probs = dynamic_mask_probs(feats.requires_grad_(True), params.requires_grad_(True), im_inds, locations, soi, shapes)
    assert not probs.requires_grad


def test_no_instances_give_an_empty_map():
    feats, params, im_inds, locations, soi, shapes = _random_case(0)
    assert dynamic_mask_probs(feats, params, im_inds, locations, soi, shapes).shape == (0, 1, 10, 14)
