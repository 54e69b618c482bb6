"""CondInst (Tian, Shen, Chen, ECCV 2020): ``MODEL.META_ARCHITECTURE: "CondInst"``.

FCOS detects instances; a controller conv on the FCOS box tower predicts, at every
location, the parameters of a tiny mask head; each instance's head runs on the shared
mask-branch features plus relative coordinates (``condseg.layers.dynamic_mask_heads``).
"""
import contextlib
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_proposal_generator
from detectron2.structures import BitMasks, Instances, PolygonMasks
from torch import nn

from condseg.layers import (
    aligned_bilinear, dice_loss, dynamic_layer_shapes, dynamic_mask_dice_loss, dynamic_mask_heads, dynamic_mask_probs,
)
from condseg.layers.dynamic_conv import IMPLS

from ..fcos.detector import FCOSDetector, at_output_size, gt_instances_of, preprocess_images, without_fields
from ..fcos.losses import flatten_level_major
from ..fcos.postprocess import gather_at_detections
from ..fcos.targets import mask_centroids
from .mask_branch import MaskBranch, semantic_loss, semantic_targets

__all__ = ["CondInst", "build_controller", "gt_bitmasks_padded", "select_training_instances", "postprocess_masks"]


def build_controller(in_channels: int, num_params: int) -> nn.Conv2d:
    """The 3x3 conv on the FCOS box tower that predicts every location's mask-head
    parameters (weights N(0, 0.01), bias 0, as published)."""
    controller = nn.Conv2d(in_channels, num_params, kernel_size=3, padding=1)
    nn.init.normal_(controller.weight, std=0.01)
    nn.init.constant_(controller.bias, 0)
    return controller


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


def postprocess_masks(global_masks: torch.Tensor, padded_size, image_size, output_size, threshold: float = 0.5,
                      chunk_bytes: int = 32 << 20):
    """``(N, 1, h, w)`` mask probabilities at the mask output stride -> ``(N, H_out, W_out)``
    bool: aligned upsampling to the padded input, crop to the resized image, bilinear
    resize to the requested output size, threshold.

    The float intermediates exist for a chunk of instances at a time (at most about
    ``chunk_bytes`` of them), so the peak memory is the bool output plus one chunk, not
    two float copies of every instance at full size; each instance's mask is the same
    whatever the chunk."""
    n = global_masks.shape[0]
    out = torch.zeros((n, *output_size), dtype=torch.bool, device=global_masks.device)
    if n == 0:
        return out
    factor = padded_size[0] // global_masks.shape[2]
    # float32 bytes of one instance: the upsampled mask and its padded copy, and the resized one
    per_instance = 4 * (2 * padded_size[0] * padded_size[1] + output_size[0] * output_size[1])
    chunk = max(1, chunk_bytes // per_instance)
    for start in range(0, n, chunk):
        masks = aligned_bilinear(global_masks[start : start + chunk], factor)[:, :, : image_size[0], : image_size[1]]
        masks = F.interpolate(masks, size=tuple(output_size), mode="bilinear", align_corners=False)
        out[start : start + chunk] = masks[:, 0] > threshold
    return out


def _untimed(name: str):
    """No region: what :meth:`CondInst._inference_masks` runs its steps in by default."""
    return contextlib.nullcontext()


@META_ARCH_REGISTRY.register()
class CondInst(FCOSDetector):
    """:class:`FCOSDetector` (backbone, FCOS, input normalisation) plus the mask branch,
    the controller and the dynamic mask heads.

    FCOS runs first (:meth:`FCOS.predict`); the controller maps its box towers to
    per-location mask-head parameters ``params``, which are taken at the positives
    (training) or the detections (inference) that FCOS reports.
    """

    internal_fields = FCOSDetector.internal_fields + ("params",)

    @configurable
    def __init__(self, *, backbone: Backbone, proposal_generator: nn.Module, pixel_mean, pixel_std,
                 mask_branch: MaskBranch, controller: nn.Module, layer_shapes: List[Tuple[int, int]],
                 rel_coords: bool = True, head_impl: str = "bmm", mask_out_stride: int = 4,
                 max_proposals: int = -1, topk_per_image: int = -1, semantic_loss_on: bool = False):
        """
        Args:
            proposal_generator: the :class:`FCOS` detector (its sizes of interest also
                normalise the relative coordinates, its focal-loss settings the semantic loss).
            mask_branch: the shared mask features (and the optional semantic head).
            controller: box-tower map ``(N, D, H, W)`` -> parameters ``(N, P, H, W)``,
                ``P = sum(o * i + o for o, i in layer_shapes)``.
            layer_shapes: ``(out, in)`` channels of each dynamic mask-head layer.
            head_impl: how the dynamic heads run: ``grouped_conv`` or ``bmm``.
            mask_out_stride: stride of the predicted masks (divides the mask branch's).
            max_proposals / topk_per_image: which positives supervise masks
                (:func:`select_training_instances`).
        """
        super().__init__(backbone=backbone, proposal_generator=proposal_generator,
                         pixel_mean=pixel_mean, pixel_std=pixel_std)
        if max_proposals > 0 and topk_per_image > 0:
            raise ValueError("MODEL.CONDINST.MAX_PROPOSALS and MODEL.CONDINST.TOPK_PROPOSALS_PER_IM cannot both be on")
        if mask_branch.out_stride % mask_out_stride:
            raise ValueError(
                f"MODEL.CONDINST.MASK_OUT_STRIDE ({mask_out_stride}) must divide the mask branch stride "
                f"({mask_branch.out_stride})"
            )
        self.mask_branch = mask_branch
        self.controller = controller
        self.layer_shapes = list(layer_shapes)
        self.rel_coords = rel_coords
        self.head_impl = head_impl
        self.mask_out_stride = mask_out_stride
        self.max_proposals = max_proposals
        self.topk_per_image = topk_per_image
        self.semantic_loss_on = semantic_loss_on
        soi = list(proposal_generator.sizes_of_interest)  # one normaliser per level: the last range doubled
        self.register_buffer("sizes_of_interest", torch.tensor(soi + [soi[-1] * 2], dtype=torch.float32), False)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.CONDINST
        impl = c.MASK_HEAD.IMPL
        if impl != "auto" and impl not in IMPLS:
            raise ValueError(f"MODEL.CONDINST.MASK_HEAD.IMPL must be 'auto' or one of {IMPLS}, got {impl!r}")
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        rel_coords = not c.MASK_HEAD.DISABLE_REL_COORDS
        layer_shapes = dynamic_layer_shapes(c.MASK_BRANCH.OUT_CHANNELS, c.MASK_HEAD.CHANNELS, c.MASK_HEAD.NUM_LAYERS,
                                            rel_coords)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, shapes),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "mask_branch": MaskBranch(
                shapes, c.MASK_BRANCH.IN_FEATURES, c.MASK_BRANCH.CHANNELS, c.MASK_BRANCH.NUM_CONVS,
                c.MASK_BRANCH.OUT_CHANNELS, c.MASK_BRANCH.NORM,
                num_classes=cfg.MODEL.FCOS.NUM_CLASSES if c.MASK_BRANCH.SEMANTIC_LOSS_ON else None,
                prior_prob=cfg.MODEL.FCOS.PRIOR_PROB,
            ),
            "controller": build_controller(shapes[cfg.MODEL.FCOS.IN_FEATURES[0]].channels,
                                           sum(o * i + o for o, i in layer_shapes)),
            "layer_shapes": layer_shapes,
            "rel_coords": rel_coords,
            "head_impl": "bmm" if impl == "auto" else impl,  # the faster one on the CPU (docs/BENCHMARKS.md)
            "mask_out_stride": c.MASK_OUT_STRIDE,
            "max_proposals": c.MAX_PROPOSALS,
            "topk_per_image": c.TOPK_PROPOSALS_PER_IM,
            "semantic_loss_on": c.MASK_BRANCH.SEMANTIC_LOSS_ON,
        }

    def _mask_logits(self, mask_feats, params, im_inds, locations, fpn_levels) -> torch.Tensor:
        """``(N, 1, H, W)`` mask logits at ``MASK_OUT_STRIDE``."""
        low = dynamic_mask_heads(
            mask_feats, params, im_inds, locations, self.sizes_of_interest[fpn_levels], self.layer_shapes,
            self.mask_branch.out_stride, self.rel_coords, self.head_impl,
        )
        return aligned_bilinear(low, self.mask_branch.out_stride // self.mask_out_stride)

    def _mask_probs(self, mask_feats, params, im_inds, locations, fpn_levels) -> torch.Tensor:
        """``(N, 1, H, W)`` mask probabilities at ``MASK_OUT_STRIDE``, no gradients: fused and
        blocked for bmm (:func:`~condseg.layers.dynamic_mask_probs`, same values), the
        published computation for grouped_conv."""
        if self.head_impl == "bmm":
            return dynamic_mask_probs(
                mask_feats, params, im_inds, locations, self.sizes_of_interest[fpn_levels], self.layer_shapes,
                self.mask_branch.out_stride, self.mask_branch.out_stride // self.mask_out_stride, self.rel_coords,
            )
        return self._mask_logits(mask_feats, params, im_inds, locations, fpn_levels).sigmoid()

    def _mask_loss(self, mask_feats, chosen: Instances, targets: torch.Tensor) -> torch.Tensor:
        """``(N,)`` dice losses of the chosen instances' masks against ``(N, 1, h, w)``
        targets at ``MASK_OUT_STRIDE``: fused and blocked for bmm (same values and
        gradients), the published computation for grouped_conv."""
        targets = targets.to(mask_feats.dtype)
        if self.head_impl == "bmm":
            return dynamic_mask_dice_loss(
                mask_feats, chosen.params, chosen.im_inds, chosen.locations,
                self.sizes_of_interest[chosen.fpn_levels], self.layer_shapes, targets, self.mask_branch.out_stride,
                self.mask_branch.out_stride // self.mask_out_stride, self.rel_coords,
            )
        logits = self._mask_logits(mask_feats, chosen.params, chosen.im_inds, chosen.locations, chosen.fpn_levels)
        return dice_loss(logits.sigmoid(), targets)

    def forward(self, batched_inputs: List[Dict]):
        images = preprocess_images(batched_inputs, self.pixel_mean, self.pixel_std, self.backbone.size_divisibility)
        features = self.backbone(images.tensor)
        mask_feats = self.mask_branch(features)
        fcos = self.proposal_generator
        outputs = fcos.predict(features)
        params = [self.controller(t) for t in outputs["towers"]]  # per level (N, P, H_l, W_l)
        if self.training:
            return self._losses(batched_inputs, images, features, mask_feats, outputs, params)

        dets = fcos.detect(outputs, images.image_sizes)
        for i, d in enumerate(dets):
            d.params = gather_at_detections(params, i, d.fpn_levels, d.loc_inds)
        # what the masks need is gathered: the head outputs and the FPN levels are freed
        # before the masks are computed and pasted (the inference peak memory)
        del features, outputs, params
        return self._inference_masks(dets, mask_feats, batched_inputs, images.image_sizes,
                                     tuple(images.tensor.shape[-2:]))

    def _inference_masks(self, dets: List[Instances], mask_feats, batched_inputs, image_sizes, padded,
                         region=_untimed) -> List[Dict]:
        """The detections at their output size with ``pred_masks`` ``(N, H_out, W_out)`` bool.

        The boxes are rescaled and the empty ones dropped first (``at_output_size``), so that
        no instance's mask is computed for nothing or copied by that filter; each image's
        probabilities are a slice of the batch's (the detections are in image order).
        ``region(name)``: a context manager around the heads (``"dynamic mask heads"``) and
        the pasting (``"paste masks"``), which the stage benchmark times; none by default."""
        dets = at_output_size(dets, batched_inputs, image_sizes)
        counts = [len(d) for d in dets]
        im_inds = torch.repeat_interleave(torch.arange(len(dets), device=self.device),
                                          torch.tensor(counts, device=self.device))
        # the images of a batch may differ in size, so concatenate fields, not Instances
        cat = lambda name: torch.cat([d.get(name) for d in dets])  # noqa: E731
        with region("dynamic mask heads"):
            probs = self._mask_probs(mask_feats, cat("params"), im_inds, cat("locations"), cat("fpn_levels"))
        with region("paste masks"):
            for r, p, image_size in zip(dets, probs.split(counts), image_sizes):
                r.pred_masks = postprocess_masks(p, padded, image_size, r.image_size)
        return [{"instances": without_fields(r, self.internal_fields)} for r in dets]

    def _losses(self, batched_inputs, images, features, mask_feats, outputs, params) -> Dict[str, torch.Tensor]:
        """FCOS's losses, the dice mask loss of the chosen positives and the optional semantic loss."""
        fcos = self.proposal_generator
        padded = tuple(images.tensor.shape[-2:])
        gt = gt_instances_of(batched_inputs, self.device)
        if any(len(x) and not x.has("gt_masks") for x in gt):
            raise ValueError("CondInst needs gt_masks: set MODEL.MASK_ON True and use a dataset with masks")
        full = [gt_bitmasks_padded(x, padded) for x in gt]
        centers = [mask_centroids(m, x.gt_boxes.tensor) for m, x in zip(full, gt)]
        positives, losses = fcos.losses(outputs, gt, centers)
        positives.params = flatten_level_major(params)[positives.flat_inds]
        start = self.mask_out_stride // 2
        targets = torch.cat([m[:, start :: self.mask_out_stride, start :: self.mask_out_stride] for m in full])
        chosen = select_training_instances(positives, self.max_proposals, self.topk_per_image)
        if len(chosen) == 0:  # zero, connected to the graph
            losses["loss_mask"] = mask_feats.sum() * 0 + positives.params.sum() * 0
        else:
            losses["loss_mask"] = self._mask_loss(mask_feats, chosen, targets[chosen.gt_inds][:, None]).mean()
        if self.semantic_loss_on:
            sem_targets = torch.stack(
                [semantic_targets(m, x.gt_classes, self.mask_branch.out_stride) for m, x in zip(full, gt)]
            )
            losses["loss_sem"] = semantic_loss(
                self.mask_branch.semantic_logits(features), sem_targets, fcos.focal_alpha, fcos.focal_gamma
            )
        return losses
