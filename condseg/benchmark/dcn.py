"""DCNv2 3x3 (offset/mask predictor + deformable conv, as torchvision's
deform_conv2d and as condseg's grid_sample formulation) against a plain 3x3
conv of the same shape, res3-res5 at batch 2.
"""
from .conv_layer import RESNET50_STAGES, conv_input, conv_run
from .harness import Case


def runs(device: str, impl: str, stage: str, batch: int, mode: str, seed: int = 0):
    """A 3x3 conv (C -> C, padding 1) at a ResNet-50 stage shape: ``conv2d`` (plain) or
    ``dcnv2:IMPL`` (the modulated deformable conv with its offset/mask predictor, as in a
    deformable ResNet block, through ``DeformConv2d(impl=IMPL)``: ``torchvision``'s
    ``deform_conv2d`` or condseg's ``grid_sample`` formulation). Offsets are drawn from
    N(0, 1) px (a trained predictor's, not the zero init). Outputs differ from the plain
    conv's by design (no agreement column)."""
    import torch
    from torch import nn

    from condseg.layers import DeformConv2d, offset_predictor, split_offset_mask

    channels, _ = RESNET50_STAGES[stage]
    torch.manual_seed(seed)
    x = conv_input(stage, batch, device, seed)
    if impl == "conv2d":
        return conv_run(nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device), x, mode)
    predictor = offset_predictor(channels, 3, padding=1, modulated=True).to(device)
    with torch.no_grad():
        predictor.weight.normal_(0, 1.0 / (3 * channels) ** 0.5)  # offsets of about N(0, 1) px
    conv = DeformConv2d(channels, channels, 3, padding=1, impl=impl.split(":")[1]).to(device)

    def call(inp):
        offset, mask = split_offset_mask(predictor(inp), modulated=True)
        return conv(inp, offset, mask)

    return conv_run(conv, x, mode, call)


def plan(devices):
    return [
        {"case": "dcn", "device": d, "impl": impl, "stage": stage, "batch": 2, "mode": mode}
        for d in devices
        for mode in ("train", "infer")
        for stage in ("res3", "res4", "res5")
        for impl in ("conv2d", "dcnv2:torchvision", "dcnv2:grid_sample")
    ]


CASE = Case(plan, runs, "conv2d", ("stage", "batch"), comparable=False, help=__doc__)
