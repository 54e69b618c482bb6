"""ResNet bottom-up network built from ``MODEL.RESNETS.*``.

Like detectron2's ``build_resnet_backbone`` (same blocks, parameter names and
checkpoint layout), but basic-block ResNets (18/34) may have any width
(``RES2_OUT_CHANNELS``, ``STEM_OUT_CHANNELS``), which makes slim models for CPU
training possible, and it never reaches detectron2's compiled deformable-conv op.
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

__all__ = ["build_resnet", "BLOCKS_PER_STAGE"]

BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def build_resnet(cfg, input_shape: ShapeSpec) -> ResNet:
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(BLOCKS_PER_STAGE)}, got {r.DEPTH}")
    if any(r.DEFORM_ON_PER_STAGE):
        raise NotImplementedError("MODEL.RESNETS.DEFORM_ON_PER_STAGE: deformable stages are not available yet")
    basic = r.DEPTH in (18, 34)
    if basic and (r.RES5_DILATION != 1 or r.NUM_GROUPS != 1):
        raise ValueError("ResNet-18/34 need MODEL.RESNETS.RES5_DILATION = 1 and MODEL.RESNETS.NUM_GROUPS = 1")
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {r.RES5_DILATION}")

    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    in_channels = r.STEM_OUT_CHANNELS
    out_channels = r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for idx, num_blocks in enumerate(BLOCKS_PER_STAGE[r.DEPTH]):
        dilation = r.RES5_DILATION if idx == 3 else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        kwargs = {
            "num_blocks": num_blocks,
            "stride_per_block": [first_stride] + [1] * (num_blocks - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": r.NORM,
        }
        if basic:
            kwargs["block_class"] = BasicBlock
        else:
            kwargs.update(
                block_class=BottleneckBlock,
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=r.STRIDE_IN_1X1,
                dilation=dilation,
                num_groups=r.NUM_GROUPS,
            )
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
