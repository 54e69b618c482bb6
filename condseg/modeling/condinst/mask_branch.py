"""CondInst mask branch: fuse FPN levels into one shared stride-8 feature map."""
from typing import Dict, List

import torch
from detectron2.layers import ShapeSpec, get_norm
from torch import nn

from condseg.layers import aligned_bilinear

__all__ = ["MaskBranch"]


def _conv_norm_relu(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not norm)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0)
    layers = [conv]
    if norm:
        layers.append(get_norm(norm, out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MaskBranch(nn.Module):
    """``[conv3x3-norm-ReLU]`` per input level, levels upsampled (aligned) to the first
    one and summed, ``num_convs`` more 3x3 convs, and a 1x1 conv to ``out_channels``.

    Input: FPN features by name (e.g. p3, p4, p5). Output: ``(N, out_channels, H_3, W_3)``
    at the stride of the first input level (8 for p3).
    """

    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: List[str], channels: int = 128,
                 num_convs: int = 4, out_channels: int = 8, norm: str = "BN"):
        super().__init__()
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(f"MODEL.CONDINST.MASK_BRANCH.IN_FEATURES names {missing}, not produced by the backbone")
        self.in_features = list(in_features)
        self.out_stride = input_shape[in_features[0]].stride
        self.refine = nn.ModuleList([_conv_norm_relu(input_shape[f].channels, channels, norm) for f in in_features])
        self.tower = nn.Sequential(*[_conv_norm_relu(channels, channels, norm) for _ in range(num_convs)])
        self.predictor = nn.Conv2d(channels, out_channels, 1)
        nn.init.kaiming_uniform_(self.predictor.weight, a=1)
        nn.init.constant_(self.predictor.bias, 0)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.refine[0](features[self.in_features[0]])
        for refine, name in zip(self.refine[1:], self.in_features[1:]):
            y = refine(features[name])
            factor = x.shape[-2] // y.shape[-2]
            x = x + aligned_bilinear(y, factor)
        return self.predictor(self.tower(x))
