"""condseg.layers.fold_norm: batch norms folded into their convolutions compute what the
convolution and the norm computed, and only norms on fixed statistics are folded."""
import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model
from torch import nn

from condseg.layers import DeformConv2d, ODConv2d, fold_batch_norms
from condseg.layers.fold_norm import norm_scale_shift


def _randomize(norm: nn.Module, g: torch.Generator) -> nn.Module:
    """Non-trivial statistics and affine parameters (a fresh norm is the identity)."""
    c = norm.running_mean.numel()
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(c, generator=g))
        norm.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        norm.weight.copy_(torch.randn(c, generator=g))
        norm.bias.copy_(torch.randn(c, generator=g))
    return norm


def _assert_folds_to_same(conv: nn.Module, x: torch.Tensor):
    conv = conv.double().eval()
    with torch.no_grad():
        want = conv(x)
        assert fold_batch_norms(conv) == 1
        got = conv(x)
    assert conv.norm is None and conv.bias is not None
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bias", [False, True])
def test_detectron2_conv_with_frozen_bn(bias):
    g = torch.Generator().manual_seed(0)
    conv = Conv2d(6, 5, 3, padding=1, bias=bias, norm=_randomize(FrozenBatchNorm2d(5), g))
    _assert_folds_to_same(conv, torch.randn(2, 6, 9, 7, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("impl,bias", [("batch_groups", False), ("batch_groups", True), ("winograd", False),
                                       ("per_sample", False)])
def test_odconv_with_frozen_bn(impl, bias):
    """The filter attention scales output channels per sample, so the norm's scale, per
    output channel, folds into every candidate kernel."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    conv = ODConv2d(8, 6, 3, padding=1, bias=bias, kernel_num=3, impl=impl, norm=_randomize(FrozenBatchNorm2d(6), g))
    _assert_folds_to_same(conv, torch.randn(2, 8, 8, 8, generator=g, dtype=torch.float64))


def test_deform_conv_with_frozen_bn():
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    conv = DeformConv2d(4, 5, 3, padding=1, norm=_randomize(FrozenBatchNorm2d(5), g))
    x = torch.randn(1, 4, 7, 6, generator=g, dtype=torch.float64)
    offset = torch.randn(1, 18, 7, 6, generator=g, dtype=torch.float64)
    conv = conv.double().eval()
    with torch.no_grad():
        want = conv(x, offset)
        assert fold_batch_norms(conv) == 1
        got = conv(x, offset)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_sequential_conv_bn_in_eval_folds_and_training_bn_or_group_norm_does_not():
    g = torch.Generator().manual_seed(3)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _randomize(nn.BatchNorm2d(4), g), nn.ReLU(),
                        nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4)).double()
    x = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    assert fold_batch_norms(seq.train()) == 0  # batch statistics: nothing fixed to fold
    assert isinstance(seq[1], nn.BatchNorm2d) and norm_scale_shift(seq[4]) is None
    seq.eval()
    with torch.no_grad():
        want = seq(x)
        assert fold_batch_norms(seq) == 1
        got = seq(x)
    assert isinstance(seq[1], nn.Identity) and isinstance(seq[4], nn.GroupNorm)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_whole_condinst_folded_gives_the_same_detections(condinst_cfg):
    """A tiny CondInst with an ODConv stage, a deformable stage and the mask branch's BNs,
    every norm randomized: folded, the same boxes, scores and masks (float rounding)."""
    cfg = condinst_cfg("MODEL.ODCONV.ON_PER_STAGE", "[False, True, False, False]",
                       "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, False, True, False]",
                       "MODEL.FCOS.INFERENCE_TH_TEST", "0.0", "MODEL.FCOS.POST_NMS_TOPK_TEST", "5")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(4)
    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d))]
    for m in norms:
        _randomize(m, g)
    image = (torch.rand(3, 96, 128, generator=g) * 255).to(torch.uint8)
    inputs = [{"image": image, "height": 96, "width": 128}]
    with torch.no_grad():
        want = model(inputs)[0]["instances"]
        folded = fold_batch_norms(model)
        got = model(inputs)[0]["instances"]
    attention = sum(1 for n, _ in model.named_modules() if n.endswith("attention.bn"))
    assert folded == len(norms) - attention  # every norm after a conv; the ODConv attention BNs stay
    assert not any(isinstance(getattr(m, "norm", None), FrozenBatchNorm2d) for m in model.modules())
    assert len(want) == len(got) > 0
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.pred_boxes.tensor, want.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
    assert (got.pred_masks != want.pred_masks).float().mean() <= 1e-3


def test_sync_batch_norm_in_eval_has_the_affine_map_of_the_same_batch_norm():
    """detectron2's "SyncBN" is ``nn.SyncBatchNorm``: in eval mode it is the same fixed map."""
    g = torch.Generator().manual_seed(5)
    bn = _randomize(nn.BatchNorm2d(4), g).eval()
    sync = nn.SyncBatchNorm(4)
    sync.load_state_dict(bn.state_dict())
    assert norm_scale_shift(sync.train()) is None
    for a, b in zip(norm_scale_shift(sync.eval()), norm_scale_shift(bn)):
        torch.testing.assert_close(a, b)
    x = torch.randn(2, 4, 3, 3, generator=g)
    s, t = norm_scale_shift(bn)
    torch.testing.assert_close(bn(x), x * s.view(1, -1, 1, 1) + t.view(1, -1, 1, 1))
