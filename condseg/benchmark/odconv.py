"""ODConv 3x3 (C -> C) at ResNet-50 stage shapes of an 800x1216 input (res2-res5:
64-512 channels at strides 4-32), batch 2 and 8, kernel_num 1 and 4: the
published formulation ("batch_groups": the batch folded into the groups of
one convolution) against condseg's others ("winograd-F2" / "-F3": Winograd
with another tile than the default F(4x4, 3x3)); training step (forward +
backward of sum(out * g), train mode) and inference.
"""
from .conv_layer import RESNET50_STAGES, conv_input, conv_run
from .harness import Case


def build_layer(impl: str, stage: str, kernel_num: int, device: str = "cpu"):
    """ODConv 3x3 (C -> C, padding 1) at a ResNet-50 stage's width, formulation ``impl``
    (``condseg.layers.odconv.IMPLS``, or ``winograd-F<m>`` for another Winograd tile)."""
    from condseg.layers import ODConv2d
    from condseg.layers.odconv import WINOGRAD_TILE

    channels, _ = RESNET50_STAGES[stage]
    tile = WINOGRAD_TILE
    if impl.startswith("winograd-F"):
        impl, tile = "winograd", int(impl[len("winograd-F"):])
    return ODConv2d(channels, channels, 3, padding=1, kernel_num=kernel_num, impl=impl, winograd_tile=tile).to(device)


def runs(device: str, impl: str, stage: str, batch: int, kernel_num: int, mode: str, seed: int = 0):
    """:func:`build_layer`'s layer on a stage-shaped input (``batch_groups`` is the
    published formulation). Training runs in train mode (attention BN on batch
    statistics), as in a training step."""
    import torch

    torch.manual_seed(seed)
    layer = build_layer(impl, stage, kernel_num, device)
    return conv_run(layer, conv_input(stage, batch, device, seed), mode)


def plan(devices):
    from condseg.layers.odconv import IMPLS, WINOGRAD_TILE
    from condseg.layers.winograd import TILE_SIZES

    impls = ["batch_groups"] + [i for i in IMPLS if i not in ("batch_groups", "pointwise")]
    impls += [f"winograd-F{m}" for m in TILE_SIZES if m != WINOGRAD_TILE]
    return [
        {"case": "odconv", "device": d, "impl": impl, "stage": stage, "batch": batch, "kernel_num": kn, "mode": mode}
        for d in devices
        for mode in ("train", "infer")
        for stage in RESNET50_STAGES
        for batch in (2, 8)
        for kn in (1, 4)
        for impl in impls
    ]


CASE = Case(plan, runs, "batch_groups", ("stage", "batch", "kernel_num"), help=__doc__)
