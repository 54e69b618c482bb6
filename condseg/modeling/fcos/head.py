"""FCOS head: shared class and box towers over the FPN levels."""
import math
from typing import List

import torch
from detectron2.layers import ShapeSpec, get_norm
from torch import nn
from torch.nn import functional as F

__all__ = ["Scale", "FCOSHead"]


class Scale(nn.Module):
    """A learnable scalar multiplying its input (one per FPN level for box regression)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init_value], dtype=torch.float32))

    def forward(self, x):
        return x * self.scale


def _tower(num_convs: int, channels: int, norm: str) -> nn.Sequential:
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, bias=True))
        if norm:
            layers.append(get_norm(norm, channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Per-location class logits, box distances and centerness for every FPN level.

    The towers are ``[conv3x3, norm, ReLU] x num_convs`` shared across levels. Box
    distances are ``ReLU(scale_l * conv(box_tower))`` in units of the level's stride.
    """

    def __init__(
        self,
        input_shape: List[ShapeSpec],
        num_classes: int,
        num_cls_convs: int = 4,
        num_box_convs: int = 4,
        num_share_convs: int = 0,
        norm: str = "GN",
        prior_prob: float = 0.01,
        use_scale: bool = True,
    ):
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"FCOS needs equal channels on every input level, got {sorted(channels)}")
        c = channels.pop()
        self.share_tower = _tower(num_share_convs, c, norm)
        self.cls_tower = _tower(num_cls_convs, c, norm)
        self.bbox_tower = _tower(num_box_convs, c, norm)
        self.cls_logits = nn.Conv2d(c, num_classes, kernel_size=3, stride=1, padding=1)
        self.bbox_pred = nn.Conv2d(c, 4, kernel_size=3, stride=1, padding=1)
        self.ctrness = nn.Conv2d(c, 1, kernel_size=3, stride=1, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in input_shape]) if use_scale else None

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.constant_(module.bias, 0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: List[torch.Tensor]):
        """Args: per level ``(N, C, H_l, W_l)``.

        Returns: lists per level of class logits ``(N, K, H, W)``, box distances
        ``(N, 4, H, W)`` (strides, >= 0), centerness logits ``(N, 1, H, W)`` and the box
        tower output ``(N, C, H, W)`` (CondInst's controller reads it).
        """
        logits, bbox_reg, ctrness, bbox_towers = [], [], [], []
        for lvl, feature in enumerate(features):
            feature = self.share_tower(feature)
            cls_tower = self.cls_tower(feature)
            bbox_tower = self.bbox_tower(feature)
            logits.append(self.cls_logits(cls_tower))
            ctrness.append(self.ctrness(bbox_tower))
            reg = self.bbox_pred(bbox_tower)
            if self.scales is not None:
                reg = self.scales[lvl](reg)
            bbox_reg.append(F.relu(reg))
            bbox_towers.append(bbox_tower)
        return logits, bbox_reg, ctrness, bbox_towers
