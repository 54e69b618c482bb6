"""Loss functions as pure tensor functions (no config, no modules).

``sigmoid_focal_loss(logits, targets, alpha, gamma)`` (Lin et al. 2017, element-wise,
unreduced; ``alpha = -1`` disables the class weighting) is torchvision's: the same formula
as the published FCOS / CondInst, bit for bit.
"""
import torch
from torchvision.ops import sigmoid_focal_loss


__all__ = ["sigmoid_focal_loss", "iou_loss", "dice_loss"]


def iou_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str = "giou") -> tuple:
    """IoU-family loss between boxes given as distances (l, t, r, b) from one point.

    Args:
        pred, target: ``(M, 4)`` non-negative distances (any common unit, e.g. strides).
        loss_type: ``"iou"`` (-log IoU), ``"linear_iou"`` (1 - IoU) or ``"giou"`` (1 - GIoU).
    Returns:
        ``(losses (M,), ious (M,), gious (M,))``. IoU is smoothed as ``(I + 1) / (U + 1)``,
        as in the published FCOS, in the unit of the inputs.
    """
    pl, pt, pr, pb = pred.unbind(dim=1)
    tl, tt, tr, tb = target.unbind(dim=1)
    target_area = (tl + tr) * (tt + tb)
    pred_area = (pl + pr) * (pt + pb)
    w_inter = torch.min(pl, tl) + torch.min(pr, tr)
    h_inter = torch.min(pt, tt) + torch.min(pb, tb)
    area_inter = w_inter * h_inter
    area_union = target_area + pred_area - area_inter
    ious = (area_inter + 1.0) / (area_union + 1.0)
    w_enclose = torch.max(pl, tl) + torch.max(pr, tr)
    h_enclose = torch.max(pt, tt) + torch.max(pb, tb)
    area_enclose = w_enclose * h_enclose + 1e-7
    gious = ious - (area_enclose - area_union) / area_enclose
    if loss_type == "iou":
        losses = -torch.log(ious)
    elif loss_type == "linear_iou":
        losses = 1 - ious
    elif loss_type == "giou":
        losses = 1 - gious
    else:
        raise ValueError(f"MODEL.FCOS.LOC_LOSS_TYPE must be 'iou', 'linear_iou' or 'giou', got {loss_type!r}")
    return losses, ious, gious


def dice_loss(scores: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-instance dice loss ``1 - 2 sum(x t) / (sum x^2 + sum t^2 + eps)``.

    Args:
        scores: ``(N, ...)`` probabilities (after sigmoid).
        targets: ``(N, ...)`` 0/1 targets of the same shape.
    Returns:
        ``(N,)`` losses.
    """
    n = scores.shape[0]
    scores = scores.reshape(n, -1)
    targets = targets.reshape(n, -1).to(scores.dtype)
    inter = (scores * targets).sum(dim=1)
    union = (scores * scores).sum(dim=1) + (targets * targets).sum(dim=1) + eps
    return 1.0 - 2.0 * inter / union
