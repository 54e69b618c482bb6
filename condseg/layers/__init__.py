"""Reusable tensor ops; nothing here imports from ``condseg.modeling``."""
from .geometry import aligned_bilinear, compute_locations
from .losses import dice_loss, iou_loss, sigmoid_focal_loss

__all__ = ["aligned_bilinear", "compute_locations", "dice_loss", "iou_loss", "sigmoid_focal_loss"]
