"""ResNet-FPN backbones over condseg's ResNet (any width for R18/34):

* ``build_fcos_resnet_fpn_backbone``: the FCOS/CondInst pyramid, P3-P5 from the ResNet,
  P6/P7 from P5;
* ``build_condseg_resnet_fpn_backbone``: detectron2's Mask R-CNN pyramid, P2-P5 and a
  max-pooled P6 (``build_resnet_fpn_backbone`` with condseg's ResNet), so detectron2's
  own two-stage models run on the same slim backbones for comparisons.
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7

from .resnet import build_resnet

__all__ = ["build_fcos_resnet_fpn_backbone", "build_condseg_resnet_fpn_backbone"]


def _fpn(cfg, input_shape: ShapeSpec, top_block) -> FPN:
    return FPN(
        bottom_up=build_resnet(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """FPN over ``MODEL.FPN.IN_FEATURES`` of a ResNet (``MODEL.RESNETS.*``), with
    ``MODEL.FCOS.TOP_LEVELS`` extra levels: 2 gives P6 = conv(P5), P7 = conv(ReLU(P6))
    (stride-2 3x3 convs), 1 a max-pooled P6, 0 none. Outputs ``p3 ... p7``."""
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    top_levels = cfg.MODEL.FCOS.TOP_LEVELS
    if top_levels == 2:
        top_block = LastLevelP6P7(out_channels, out_channels, in_feature="p5")
    elif top_levels == 1:
        top_block = LastLevelMaxPool()
    elif top_levels == 0:
        top_block = None
    else:
        raise ValueError(f"MODEL.FCOS.TOP_LEVELS must be 0, 1 or 2, got {top_levels}")
    return _fpn(cfg, input_shape, top_block)


@BACKBONE_REGISTRY.register()
def build_condseg_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """FPN over ``MODEL.FPN.IN_FEATURES`` (res2-res5 for Mask R-CNN) plus a max-pooled P6,
    as detectron2's ``build_resnet_fpn_backbone``. Outputs ``p2 ... p6``."""
    return _fpn(cfg, input_shape, LastLevelMaxPool())
