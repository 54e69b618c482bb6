"""Reusable tensor ops; nothing here imports from ``condseg.modeling``."""
from .geometry import aligned_bilinear, compute_locations
from .deform_conv import DeformConv2d, DeformConvWithOffset, offset_predictor, split_offset_mask
from .deform_conv_grid_sample import deform_conv2d_grid_sample
from .dynamic_conv import dynamic_layer_shapes, dynamic_mask_heads, dynamic_param_counts, parse_dynamic_params
from .dynamic_mask_loss import dynamic_mask_dice_loss
from .dynamic_mask_probs import dynamic_mask_probs
from .fold_norm import fold_batch_norms
from .losses import dice_loss, iou_loss, sigmoid_focal_loss
from .odconv import ODConv2d, condconv2d, dyconv2d

__all__ = [
    "aligned_bilinear",
    "compute_locations",
    "condconv2d",
    "DeformConv2d",
    "DeformConvWithOffset",
    "deform_conv2d_grid_sample",
    "dice_loss",
    "dynamic_layer_shapes",
    "dynamic_mask_heads",
    "dynamic_mask_dice_loss",
    "dynamic_mask_probs",
    "dynamic_param_counts",
    "dyconv2d",
    "fold_batch_norms",
    "iou_loss",
    "ODConv2d",
    "offset_predictor",
    "parse_dynamic_params",
    "sigmoid_focal_loss",
    "split_offset_mask",
]
