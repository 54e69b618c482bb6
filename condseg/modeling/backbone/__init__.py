from .fpn import build_condseg_resnet_fpn_backbone, build_fcos_resnet_fpn_backbone
from .resnet import build_resnet

__all__ = ["build_condseg_resnet_fpn_backbone", "build_fcos_resnet_fpn_backbone", "build_resnet"]
