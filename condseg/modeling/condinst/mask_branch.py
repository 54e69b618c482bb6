"""CondInst mask branch: fuse FPN levels into one shared stride-8 feature map, and the
optional auxiliary semantic-segmentation head with its targets and loss."""
import math
from typing import Dict, List, Optional

import torch
from detectron2.layers import ShapeSpec, get_norm
from torch import nn

from condseg.layers import aligned_bilinear, sigmoid_focal_loss

__all__ = ["MaskBranch", "semantic_targets", "semantic_loss"]


def semantic_targets(bitmasks: torch.Tensor, classes: torch.Tensor, stride: int) -> torch.Tensor:
    """``(H // stride, W // stride)`` int64 class map of one image, sampled at the centres
    of ``stride`` cells: ``1 + class`` of the smallest GT mask covering the pixel, 0 where
    none does.

    bitmasks: ``(G, H, W)`` bool, classes: ``(G,)`` int64 (0-based).
    """
    start = stride // 2
    masks = bitmasks[:, start::stride, start::stride]
    out = torch.zeros(masks.shape[1:], dtype=torch.int64, device=masks.device)
    if masks.shape[0] == 0:
        return out
    areas = bitmasks.flatten(1).sum(1).to(torch.float32)  # areas of the full-resolution masks
    cover = torch.where(masks, areas[:, None, None], torch.full_like(areas, math.inf)[:, None, None])
    smallest, idx = cover.min(dim=0)
    covered = torch.isfinite(smallest)
    out[covered] = classes[idx[covered]] + 1
    return out


def semantic_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Sigmoid focal loss of ``(N, C, h, w)`` class logits against ``(N, h', w')`` maps of
    :func:`semantic_targets` (``h' >= h``, ``w' >= w``: cropped), summed and divided by
    the number of foreground pixels (at least 1)."""
    h, w = logits.shape[-2:]
    targets = targets[:, :h, :w]
    classes = torch.arange(1, logits.shape[1] + 1, device=logits.device)
    one_hot = (targets[:, None] == classes[None, :, None, None]).to(logits.dtype)
    num_pos = one_hot.sum().clamp(min=1.0)
    return sigmoid_focal_loss(logits, one_hot, alpha, gamma).sum() / num_pos


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

    With ``num_classes`` (``MODEL.CONDINST.MASK_BRANCH.SEMANTIC_LOSS_ON``), a training-only
    semantic head (two 3x3 convs and a 1x1 classifier, ``seg_head`` / ``logits``) on the
    first input level: :meth:`semantic_logits`.
    """

    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: List[str], channels: int = 128,
                 num_convs: int = 4, out_channels: int = 8, norm: str = "BN",
                 num_classes: Optional[int] = None, prior_prob: float = 0.01):
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
        if num_classes:
            first = input_shape[in_features[0]].channels
            self.seg_head = nn.Sequential(_conv_norm_relu(first, channels, norm), _conv_norm_relu(channels, channels, norm))
            self.logits = nn.Conv2d(channels, num_classes, 1)
            nn.init.constant_(self.logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.refine[0](features[self.in_features[0]])
        for refine, name in zip(self.refine[1:], self.in_features[1:]):
            y = refine(features[name])
            factor = x.shape[-2] // y.shape[-2]
            x = x + aligned_bilinear(y, factor)
        return self.predictor(self.tower(x))

    def semantic_logits(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``(N, num_classes, H_3, W_3)`` class logits of the semantic head."""
        return self.logits(self.seg_head(features[self.in_features[0]]))
