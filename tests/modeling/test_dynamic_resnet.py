"""ResNet stages with ODConv (the OD-ResNet layout) or DCN, chosen per stage from the config:
official block and whole-network outputs, parameter counts, config errors."""
import hashlib

import pytest
import torch
from detectron2.layers import ShapeSpec

from condseg.checkpoint.odconv import official_to_condseg_key
from condseg.config import get_condseg_cfg
from condseg.layers import DeformConv2d, ODConv2d
from condseg.modeling.backbone import build_resnet
from condseg.modeling.backbone.blocks import DeformBasicBlock, ODBasicBlock, ODBottleneckBlock


def err(a, e):
    a, e = a.detach().double(), e.detach().double()
    return float((a - e).abs().max() / max(1.0, float(e.abs().max())))


def resnet_cfg(depth, odconv=(False,) * 4, deform=(False,) * 4, kernel_num=1, width=None):
    cfg = get_condseg_cfg()
    r = cfg.MODEL.RESNETS
    r.DEPTH = depth
    r.NORM = "BN"
    r.STRIDE_IN_1X1 = False
    r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    r.RES2_OUT_CHANNELS = width or (64 if depth in (18, 34) else 256)
    r.STEM_OUT_CHANNELS = 64 if width is None else width
    r.DEFORM_ON_PER_STAGE = list(deform)
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.ODCONV.ON_PER_STAGE = list(odconv)
    cfg.MODEL.ODCONV.KERNEL_NUM = kernel_num
    return cfg


def block_key(official_block_key: str, prefix: str = "layer2.0.") -> str:
    """Block-relative official key -> block-relative condseg key, through the converter."""
    full = official_to_condseg_key(prefix + official_block_key)
    return full.split(".", 2)[2]


def count(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("depth,kernel_num", [(18, 1), (18, 4), (50, 1), (50, 4)])
def test_od_resnet_parameter_counts_equal_official(fixture, depth, kernel_num):
    official = fixture("odconv", "od_resnet_state_dict_keys.json")[f"od_resnet{depth}_kn{kernel_num}"]
    net = build_resnet(resnet_cfg(depth, odconv=(True,) * 4, kernel_num=kernel_num), ShapeSpec(channels=3))
    assert count(net) == official["num_parameters_excluding_fc"]
    fc = (512 * (1 if depth == 18 else 4) + 1) * 1000  # the official classifier: Linear(512 * expansion, 1000)
    assert count(net) + fc == official["num_parameters"]


def test_od_resnet_state_dict_matches_official_keys_and_shapes(fixture):
    official = fixture("odconv", "od_resnet_state_dict_keys.json")["od_resnet50_kn4"]["state_dict"]
    net = build_resnet(resnet_cfg(50, odconv=(True,) * 4, kernel_num=4), ShapeSpec(channels=3))
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    mapped = {official_to_condseg_key(e["key"]): tuple(e["shape"]) for e in official if not e["key"].startswith("fc.")}
    assert mapped == ours


# ---------------------------------------------------------------- official blocks
def _official_block(d, cls, **kwargs):
    c = d["config"]
    block = cls(c["inplanes"], c["planes"] * c["expansion"], stride=c["stride"], norm="BN", kernel_num=c["kernel_num"],
                reduction=c["reduction"], **kwargs)
    block.load_state_dict({block_key(k): v for k, v in d["state_dict"].items()}, strict=True)
    return block.eval()


def _raw_conv_outputs(block, names):
    """Outputs of the block's convs before their norms (inputs of the norms)."""
    seen = {}
    for name in names:
        getattr(block, name).norm.register_forward_pre_hook(lambda m, inp, name=name: seen.__setitem__(name, inp[0]))
    return seen


@pytest.mark.parametrize("name", ["block_basic_kn1.pt", "block_bottleneck_kn4.pt"])
@pytest.mark.parametrize("impl", ["batch_groups", "auto"])
def test_od_blocks_reproduce_official_block(fixture, name, impl):
    d = fixture("odconv", name)
    basic = d["config"]["block"] == "BasicBlock"
    if basic:
        block = _official_block(d, ODBasicBlock, impl=impl)
    else:
        block = _official_block(d, ODBottleneckBlock, bottleneck_channels=d["config"]["planes"], impl=impl)
    convs = ["conv1", "conv2"] if basic else ["conv1", "conv2", "conv3"]
    raw = _raw_conv_outputs(block, convs)
    x = d["x"].clone().requires_grad_(True)
    out = block(x)
    assert err(out, d["out"]) < 1e-5
    for conv in convs:
        assert err(raw[conv], d["intermediates"][conv]) < 1e-5, conv
    assert err(block.shortcut(d["x"]), d["intermediates"]["identity"]) < 1e-5
    (out * d["g"]).sum().backward()
    assert err(x.grad, d["grad_x"]) < 1e-5

    block = block.double()
    x = d["x"].double().requires_grad_(True)
    out = block(x)
    (out * d["g"].double()).sum().backward()
    assert err(out, d["out_f64"]) < 1e-10
    assert err(x.grad, d["grad_x_f64"]) < 1e-10


# ---------------------------------------------------------------- whole networks
# The weights of the first stages are stored with the fixtures (tests/fixtures/odconv/
# store_weights.py wrote them from the recipe); the later stages' weights are too large to
# store, and their blocks are the ones the block fixtures pin.
@pytest.mark.parametrize(
    "name,weights,depth,kernel_num",
    [
        ("od_resnet18_kn1_regen.pt", "od_resnet18_kn1_stem_to_layer2.pt", 18, 1),
        ("od_resnet50_kn4_regen.pt", "od_resnet50_kn4_stem_to_layer1.pt", 50, 4),
    ],
)
def test_od_resnet_reproduces_official_stage_outputs(fixture, name, weights, depth, kernel_num):
    d, stored = fixture("odconv", name), fixture("odconv", weights)
    official = stored["state_dict"]
    recipe = {e["key"]: e for e in d["weight_recipe"]}
    for key, t in official.items():  # the stored tensors are the ones the published outputs came from
        assert hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest() == recipe[key]["sha256"], key
    stages = [int(s[len("layer"):]) for s in stored["stages"][1:]]
    net = build_resnet(resnet_cfg(depth, odconv=(True,) * 4, kernel_num=kernel_num), ShapeSpec(channels=3))
    missing, unexpected = net.load_state_dict({official_to_condseg_key(k): v for k, v in official.items()}, strict=False)
    assert not unexpected
    # every tensor of the stem and the stored stages loaded; only the later stages' are missing
    assert {k.split(".")[0] for k in missing} == {f"res{s + 1}" for s in range(len(stages) + 1, 5)}
    net.eval()
    with torch.no_grad():
        x = net.stem(d["x"])
        assert err(x, d["outputs"]["stem"]) < 1e-5
        for s in stages:
            x = getattr(net, f"res{s + 1}")(x)
            assert err(x, d["outputs"][f"layer{s}"]) < 1e-5, s


# ---------------------------------------------------------------- per-stage choice
def test_stages_get_the_configured_convolution():
    net = build_resnet(resnet_cfg(18, odconv=(True, False, False, False), deform=(False, False, True, True), width=16),
                       ShapeSpec(channels=3))
    assert all(isinstance(b.conv1, ODConv2d) and isinstance(b.conv2, ODConv2d) for b in net.res2)
    assert all(type(b.conv2).__name__ == "Conv2d" for b in net.res3)
    assert all(isinstance(b.conv2, DeformConv2d) and hasattr(b, "conv2_offset") for b in [*net.res4, *net.res5])
    assert type(net.stem.conv1).__name__ == "Conv2d" and type(net.res3[0].shortcut).__name__ == "Conv2d"
    x = torch.randn(2, 3, 64, 64)
    outs = net(x)
    assert outs["res5"].shape == (2, 128, 2, 2)
    sum(o.sum() for o in outs.values()).backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("modulated,scale", [(True, 0.5), (False, 1.0)])
def test_fresh_deformable_block_is_the_plain_block_with_modulation_half(modulated, scale):
    """Offsets start at 0 and the mask at sigmoid(0) = 0.5: DCNv2 starts as 0.5 x the plain
    3x3 conv, DCNv1 as the plain conv."""
    from detectron2.modeling.backbone.resnet import BasicBlock

    torch.manual_seed(0)
    deform = DeformBasicBlock(8, 16, stride=2, norm="BN", deform_modulated=modulated).eval()
    plain = BasicBlock(8, 16, stride=2, norm="BN").eval()
    state = {k: v for k, v in deform.state_dict().items() if not k.startswith("conv2_offset")}
    state["conv2.weight"] = state["conv2.weight"] * scale
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 8, 12, 12)
    torch.testing.assert_close(deform(x), plain(x), rtol=1e-5, atol=1e-5)


def test_attention_batchnorms_use_running_stats_in_training():
    cfg = resnet_cfg(18, odconv=(True,) * 4, width=16)
    net = build_resnet(cfg, ShapeSpec(channels=3)).train()
    attention = [m for n, m in net.named_modules() if n.endswith("attention.bn")]
    assert attention and not any(m.training for m in attention)
    assert net.res2[0].conv1.norm.training
    cfg.MODEL.ODCONV.ATTENTION_BN_EVAL = False
    net = build_resnet(cfg, ShapeSpec(channels=3)).train()
    assert all(m.training for n, m in net.named_modules() if n.endswith("attention.bn"))


def test_stage_both_deformable_and_odconv_is_an_error():
    with pytest.raises(ValueError, match="res4.*either deformable"):
        build_resnet(resnet_cfg(18, odconv=(False, False, True, False), deform=(False, False, True, False)),
                     ShapeSpec(channels=3))
    with pytest.raises(ValueError, match="MODEL.ODCONV.ON_PER_STAGE needs 4 entries"):
        build_resnet(resnet_cfg(18, odconv=(True,)), ShapeSpec(channels=3))


def test_od_bottleneck_rejects_stride_in_1x1():
    with pytest.raises(ValueError, match="STRIDE_IN_1X1 False"):
        ODBottleneckBlock(64, 128, bottleneck_channels=32, stride=2, stride_in_1x1=True)
