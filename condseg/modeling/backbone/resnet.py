"""ResNet bottom-up network built from ``MODEL.RESNETS.*`` and ``MODEL.ODCONV.*``.

Like detectron2's ``build_resnet_backbone`` (same blocks, parameter names and
checkpoint layout), but basic-block ResNets (18/34) may have any width
(``RES2_OUT_CHANNELS``, ``STEM_OUT_CHANNELS``), which makes slim models for CPU
training possible, and each stage's block convolutions are chosen from the config:

* plain (detectron2's blocks);
* deformable, ``MODEL.RESNETS.DEFORM_ON_PER_STAGE`` (DCNv2 if ``DEFORM_MODULATED``,
  else DCNv1, ``DEFORM_NUM_GROUPS`` offset groups, ``DEFORM_IMPL``) on the 3x3 ``conv2``,
  through :class:`condseg.layers.DeformConv2d` (never detectron2's compiled op);
* ODConv, ``MODEL.ODCONV.ON_PER_STAGE`` (``KERNEL_NUM``, ``REDUCTION``, ``IMPL``, ``AUTOTUNE``): the
  OD-ResNet layout, every block conv dynamic, stem and shortcuts plain.
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

from .blocks import DeformBasicBlock, DeformBottleneckBlock, ODBasicBlock, ODBottleneckBlock

__all__ = ["build_resnet", "BLOCKS_PER_STAGE", "CondsegResNet"]


class CondsegResNet(ResNet):
    """detectron2's ``ResNet``; with ``attention_bn_eval`` the BatchNorms inside the ODConv
    attention branches always use their running statistics (their affine parameters still
    train), like the published detection backbones' ``norm_eval``: per-GPU batches of
    1-2 images give no usable batch statistics of pooled vectors."""

    def __init__(self, *args, attention_bn_eval: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.attention_bn_eval = attention_bn_eval

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.attention_bn_eval:
            for name, module in self.named_modules():
                if name.endswith("attention.bn"):
                    module.eval()
        return self


BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def build_resnet(cfg, input_shape: ShapeSpec) -> ResNet:
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(BLOCKS_PER_STAGE)}, got {r.DEPTH}")
    od = cfg.MODEL.ODCONV
    per_stage = (("MODEL.RESNETS.DEFORM_ON_PER_STAGE", r.DEFORM_ON_PER_STAGE), ("MODEL.ODCONV.ON_PER_STAGE", od.ON_PER_STAGE))
    for key, value in per_stage:
        if len(value) != 4:
            raise ValueError(f"{key} needs 4 entries (res2, res3, res4, res5), got {list(value)}")
    both = [f"res{i + 2}" for i in range(4) if r.DEFORM_ON_PER_STAGE[i] and od.ON_PER_STAGE[i]]
    if both:
        raise ValueError(
            f"{', '.join(both)}: a stage is either deformable (MODEL.RESNETS.DEFORM_ON_PER_STAGE) "
            "or ODConv (MODEL.ODCONV.ON_PER_STAGE), not both"
        )
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
        if not basic:
            kwargs.update(
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=r.STRIDE_IN_1X1,
                dilation=dilation,
                num_groups=r.NUM_GROUPS,
            )
        if od.ON_PER_STAGE[idx]:
            kwargs.update(
                block_class=ODBasicBlock if basic else ODBottleneckBlock,
                kernel_num=od.KERNEL_NUM,
                reduction=od.REDUCTION,
                impl=od.IMPL,
                autotune=od.AUTOTUNE,
            )
            if not basic:
                kwargs["stride_in_1x1"] = False  # the OD-ResNet layout: stride on the 3x3
        elif r.DEFORM_ON_PER_STAGE[idx]:
            kwargs.update(
                block_class=DeformBasicBlock if basic else DeformBottleneckBlock,
                deform_modulated=r.DEFORM_MODULATED,
                deform_num_groups=r.DEFORM_NUM_GROUPS,
                deform_impl=r.DEFORM_IMPL,
            )
        else:
            kwargs["block_class"] = BasicBlock if basic else BottleneckBlock
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return CondsegResNet(
        stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        attention_bn_eval=od.ATTENTION_BN_EVAL,
    )
