"""CondInst (Tian, Shen, Chen, ECCV 2020): ``MODEL.META_ARCHITECTURE: "CondInst"``.

FCOS detects instances; a controller conv on the FCOS box tower predicts, at every
location, the parameters of a tiny mask head; each instance's head runs on the shared
mask-branch features plus relative coordinates (``condseg.layers.dynamic_mask_heads``).
"""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import BitMasks, Instances, PolygonMasks
from torch import nn

from condseg.layers import aligned_bilinear, dice_loss, dynamic_layer_shapes, dynamic_mask_dice_loss, dynamic_mask_heads
from condseg.layers.dynamic_conv import IMPLS

from ..fcos.detector import FCOSDetector, gt_instances_of, preprocess_images
from ..fcos.targets import mask_centroids
from .mask_branch import MaskBranch, semantic_loss, semantic_targets

__all__ = ["CondInst", "gt_bitmasks_padded", "select_training_instances", "postprocess_masks"]


def gt_bitmasks_padded(instances: Instances, padded_size: Tuple[int, int]) -> torch.Tensor:
    """``(G, H_pad, W_pad)`` bool masks of an image's GTs (polygons rasterised, bitmasks
    zero-padded) in the frame of the padded batch."""
    h, w = instances.image_size
    if len(instances) == 0:  # an image without instances (a negative) may have no gt_masks field
        return torch.zeros((0, *padded_size), dtype=torch.bool, device=instances.gt_boxes.device)
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, h, w)
    bitmasks = masks.tensor.to(torch.bool)
    return F.pad(bitmasks, (0, padded_size[1] - bitmasks.shape[2], 0, padded_size[0] - bitmasks.shape[1]))


def select_training_instances(positives: Instances, max_proposals: int, topk_per_image: int) -> Instances:
    """The FCOS positives that supervise masks: all of them, a uniformly random subset of
    ``max_proposals``, or per image and GT the ``max(topk_per_image // #GTs, 1)`` best by
    ``sigmoid(max class logit) * sigmoid(centerness)``."""
    n = len(positives)
    if max_proposals > 0 and n > max_proposals:
        return positives[torch.randperm(n, device=positives.im_inds.device)[:max_proposals]]
    if topk_per_image > 0 and n > 0:
        scores = positives.logits_pred.sigmoid().max(dim=1).values * positives.ctrness_pred.sigmoid()
        keep = []
        for im in positives.im_inds.unique():
            in_image = torch.nonzero(positives.im_inds == im).squeeze(1)
            gts = positives.gt_inds[in_image]
            unique_gts = gts.unique()
            k = max(int(topk_per_image / len(unique_gts)), 1)
            for g in unique_gts:
                idx = in_image[gts == g]
                keep.append(idx[scores[idx].topk(min(k, idx.numel())).indices])
        return positives[torch.cat(keep)]
    return positives


def postprocess_masks(global_masks: torch.Tensor, padded_size, image_size, output_size, threshold: float = 0.5):
    """``(N, 1, h, w)`` mask probabilities at the mask output stride -> ``(N, H_out, W_out)``
    bool: aligned upsampling to the padded input, crop to the resized image, bilinear
    resize to the requested output size, threshold."""
    n = global_masks.shape[0]
    if n == 0:
        return torch.zeros((0, *output_size), dtype=torch.bool, device=global_masks.device)
    factor = padded_size[0] // global_masks.shape[2]
    masks = aligned_bilinear(global_masks, factor)[:, :, : image_size[0], : image_size[1]]
    masks = F.interpolate(masks, size=tuple(output_size), mode="bilinear", align_corners=False)
    return masks[:, 0] > threshold


@META_ARCH_REGISTRY.register()
class CondInst(FCOSDetector):
    """:class:`FCOSDetector` (backbone, FCOS, input normalisation) plus the mask branch,
    the controller and the dynamic mask heads."""

    def __init__(self, cfg):
        c = cfg.MODEL.CONDINST
        if c.MAX_PROPOSALS > 0 and c.TOPK_PROPOSALS_PER_IM > 0:
            raise ValueError("MODEL.CONDINST.MAX_PROPOSALS and MODEL.CONDINST.TOPK_PROPOSALS_PER_IM cannot both be on")
        impl = c.MASK_HEAD.IMPL
        if impl != "auto" and impl not in IMPLS:
            raise ValueError(f"MODEL.CONDINST.MASK_HEAD.IMPL must be 'auto' or one of {IMPLS}, got {impl!r}")
        self.head_impl = "bmm" if impl == "auto" else impl  # bmm measured faster on the CPU (docs/BENCHMARKS.md)

        super().__init__(cfg)
        shapes = self.backbone.output_shape()
        self.mask_branch = MaskBranch(
            shapes, c.MASK_BRANCH.IN_FEATURES, c.MASK_BRANCH.CHANNELS, c.MASK_BRANCH.NUM_CONVS,
            c.MASK_BRANCH.OUT_CHANNELS, c.MASK_BRANCH.NORM,
            num_classes=cfg.MODEL.FCOS.NUM_CLASSES if c.MASK_BRANCH.SEMANTIC_LOSS_ON else None,
            prior_prob=cfg.MODEL.FCOS.PRIOR_PROB,
        )
        self.semantic_loss_on = c.MASK_BRANCH.SEMANTIC_LOSS_ON
        self.focal_alpha, self.focal_gamma = cfg.MODEL.FCOS.LOSS_ALPHA, cfg.MODEL.FCOS.LOSS_GAMMA
        self.rel_coords = not c.MASK_HEAD.DISABLE_REL_COORDS
        self.layer_shapes = dynamic_layer_shapes(
            c.MASK_BRANCH.OUT_CHANNELS, c.MASK_HEAD.CHANNELS, c.MASK_HEAD.NUM_LAYERS, self.rel_coords
        )
        num_params = sum(o * i + o for o, i in self.layer_shapes)
        tower_channels = shapes[cfg.MODEL.FCOS.IN_FEATURES[0]].channels
        self.controller = nn.Conv2d(tower_channels, num_params, kernel_size=3, padding=1)
        nn.init.normal_(self.controller.weight, std=0.01)
        nn.init.constant_(self.controller.bias, 0)

        soi = list(cfg.MODEL.FCOS.SIZES_OF_INTEREST)
        self.register_buffer("sizes_of_interest", torch.tensor(soi + [soi[-1] * 2], dtype=torch.float32), False)
        self.mask_out_stride = c.MASK_OUT_STRIDE
        if self.mask_branch.out_stride % self.mask_out_stride:
            raise ValueError(
                f"MODEL.CONDINST.MASK_OUT_STRIDE ({self.mask_out_stride}) must divide the mask branch stride "
                f"({self.mask_branch.out_stride})"
            )
        self.max_proposals = c.MAX_PROPOSALS
        self.topk_per_image = c.TOPK_PROPOSALS_PER_IM
        self.to(self.device)  # the parts added after FCOSDetector placed itself

    def _mask_logits(self, mask_feats, params, im_inds, locations, fpn_levels) -> torch.Tensor:
        """``(N, 1, H, W)`` mask logits at ``MASK_OUT_STRIDE``."""
        low = dynamic_mask_heads(
            mask_feats, params, im_inds, locations, self.sizes_of_interest[fpn_levels], self.layer_shapes,
            self.mask_branch.out_stride, self.rel_coords, self.head_impl,
        )
        return aligned_bilinear(low, self.mask_branch.out_stride // self.mask_out_stride)

    def _mask_loss(self, mask_feats, chosen: Instances, targets: torch.Tensor) -> torch.Tensor:
        """``(N,)`` dice losses of the chosen instances' masks against ``(N, 1, h, w)``
        targets at ``MASK_OUT_STRIDE``: fused and blocked for bmm (same values and
        gradients), the published computation for grouped_conv."""
        targets = targets.to(mask_feats.dtype)
        if self.head_impl == "bmm":
            return dynamic_mask_dice_loss(
                mask_feats, chosen.top_feats, chosen.im_inds, chosen.locations,
                self.sizes_of_interest[chosen.fpn_levels], self.layer_shapes, targets, self.mask_branch.out_stride,
                self.mask_branch.out_stride // self.mask_out_stride, self.rel_coords,
            )
        logits = self._mask_logits(mask_feats, chosen.top_feats, chosen.im_inds, chosen.locations, chosen.fpn_levels)
        return dice_loss(logits.sigmoid(), targets)

    def forward(self, batched_inputs: List[Dict]):
        images = preprocess_images(batched_inputs, self.pixel_mean, self.pixel_std, self.backbone.size_divisibility)
        features = self.backbone(images.tensor)
        mask_feats = self.mask_branch(features)

        if self.training:
            padded = tuple(images.tensor.shape[-2:])
            gt = gt_instances_of(batched_inputs, self.device)
            if any(len(x) and not x.has("gt_masks") for x in gt):
                raise ValueError("CondInst needs gt_masks: set MODEL.MASK_ON True and use a dataset with masks")
            full = [gt_bitmasks_padded(x, padded) for x in gt]
            centers = [mask_centroids(m, x.gt_boxes.tensor) for m, x in zip(full, gt)]
            positives, losses = self.proposal_generator(images, features, gt, self.controller, centers)
            start = self.mask_out_stride // 2
            targets = torch.cat([m[:, start :: self.mask_out_stride, start :: self.mask_out_stride] for m in full])
            chosen = select_training_instances(positives, self.max_proposals, self.topk_per_image)
            if len(chosen) == 0:  # zero, connected to the graph
                losses["loss_mask"] = mask_feats.sum() * 0 + positives.top_feats.sum() * 0
            else:
                losses["loss_mask"] = self._mask_loss(mask_feats, chosen, targets[chosen.gt_inds][:, None]).mean()
            if self.semantic_loss_on:
                sem_targets = torch.stack(
                    [semantic_targets(m, x.gt_classes, self.mask_branch.out_stride) for m, x in zip(full, gt)]
                )
                losses["loss_sem"] = semantic_loss(
                    self.mask_branch.semantic_logits(features), sem_targets, self.focal_alpha, self.focal_gamma
                )
            return losses

        dets, _ = self.proposal_generator(images, features, None, self.controller)
        im_inds = torch.cat([torch.full((len(d),), i, device=self.device, dtype=torch.int64) for i, d in enumerate(dets)])
        # the images of a batch may differ in size, so concatenate fields, not Instances
        params, locations, levels = (torch.cat([d.get(k) for d in dets]) for k in ("top_feats", "locations", "fpn_levels"))
        global_masks = self._mask_logits(mask_feats, params, im_inds, locations, levels).sigmoid()
        for i, d in enumerate(dets):
            d.pred_global_masks = global_masks[im_inds == i]
        return self.postprocess(dets, batched_inputs, images)

    internal_fields = FCOSDetector.internal_fields + ("pred_global_masks",)

    def finish_instances(self, instances, image_size, padded_size) -> None:
        """``pred_masks``: the kept detections' masks, pasted at the output size."""
        instances.pred_masks = postprocess_masks(
            instances.pred_global_masks, padded_size, image_size, instances.image_size
        )
