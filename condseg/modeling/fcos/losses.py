"""FCOS losses on flattened predictions and targets (see ``targets.py`` for the order)."""
from typing import Callable

import torch
import torch.nn.functional as F

from condseg.layers import iou_loss, sigmoid_focal_loss

from .targets import centerness_targets

__all__ = ["fcos_losses", "flatten_level_major", "all_reduce_mean"]


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over the processes of the default group (identity when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x
    world = torch.distributed.get_world_size()
    if world == 1:
        return x
    x = x.clone()
    torch.distributed.all_reduce(x)
    return x / world


def flatten_level_major(per_level: list) -> torch.Tensor:
    """``[(N, C, H_l, W_l)] -> (sum_l N * H_l * W_l, C)`` in level, image, row, column order."""
    return torch.cat([x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) for x in per_level], dim=0)


def fcos_losses(
    logits: torch.Tensor,
    reg_pred: torch.Tensor,
    ctrness_pred: torch.Tensor,
    labels: torch.Tensor,
    reg_targets: torch.Tensor,
    num_classes: int,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    loc_loss_type: str = "giou",
    loss_weight_cls: float = 1.0,
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] = all_reduce_mean,
) -> dict:
    """Classification (focal), box (IoU family) and centerness (BCE) losses.

    Args:
        logits: ``(M, num_classes)``; reg_pred: ``(M, 4)`` stride-normalised, non-negative;
        ctrness_pred: ``(M,)`` logits; labels: ``(M,)`` (background = ``num_classes``);
        reg_targets: ``(M, 4)`` stride-normalised.
        reduce_mean: averages normalisers over processes (identity on one process).
    Returns:
        ``{"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}`` scalars and, under
        ``"extras"``, ``pos_inds``, ``ctrness_targets``, ``ious``, ``gious``, ``num_pos_avg``,
        ``loss_denorm``.
    """
    pos_inds = torch.nonzero(labels != num_classes).squeeze(1)
    num_pos_avg = reduce_mean(logits.new_tensor([pos_inds.numel()])).clamp(min=1.0)  # in the losses' dtype

    cls_targets = torch.zeros_like(logits)
    cls_targets[pos_inds, labels[pos_inds]] = 1
    loss_cls = sigmoid_focal_loss(logits, cls_targets, focal_alpha, focal_gamma).sum() / num_pos_avg

    reg_pred_pos = reg_pred[pos_inds]
    reg_targets_pos = reg_targets[pos_inds]
    ctrness_pred_pos = ctrness_pred[pos_inds]
    ctr_targets = centerness_targets(reg_targets_pos)
    loss_denorm = reduce_mean(ctr_targets.sum().reshape(1)).clamp(min=1e-6)

    if pos_inds.numel() > 0:
        losses, ious, gious = iou_loss(reg_pred_pos, reg_targets_pos, loc_loss_type)
        loss_loc = (losses * ctr_targets).sum() / loss_denorm
        loss_ctr = F.binary_cross_entropy_with_logits(ctrness_pred_pos, ctr_targets, reduction="sum") / num_pos_avg
    else:  # zero, but connected to the graph so every parameter gets a gradient
        ious = gious = reg_pred.new_zeros(0)
        loss_loc = reg_pred.sum() * 0
        loss_ctr = ctrness_pred.sum() * 0

    return {
        "loss_fcos_cls": loss_cls.reshape(()) * loss_weight_cls,
        "loss_fcos_loc": loss_loc.reshape(()),
        "loss_fcos_ctr": loss_ctr.reshape(()),
        "extras": {
            "pos_inds": pos_inds,
            "ctrness_targets": ctr_targets,
            "ious": ious,
            "gious": gious,
            "num_pos_avg": num_pos_avg.reshape(()),
            "loss_denorm": loss_denorm.reshape(()),
        },
    }
