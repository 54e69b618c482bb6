"""Reusable tensor ops; nothing here imports from ``condseg.modeling``."""
from .geometry import aligned_bilinear, compute_locations
from .dynamic_conv import dynamic_layer_shapes, dynamic_mask_heads, dynamic_param_counts, parse_dynamic_params
from .dynamic_mask_loss import dynamic_mask_dice_loss
from .losses import dice_loss, iou_loss, sigmoid_focal_loss

__all__ = [
    "aligned_bilinear",
    "compute_locations",
    "dice_loss",
    "dynamic_layer_shapes",
    "dynamic_mask_heads",
    "dynamic_mask_dice_loss",
    "dynamic_param_counts",
    "iou_loss",
    "parse_dynamic_params",
    "sigmoid_focal_loss",
]
