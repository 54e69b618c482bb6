"""FCOS (Tian et al. 2019) as a detectron2 proposal generator.

Used alone by :class:`~condseg.modeling.fcos.detector.FCOSDetector` and as the detector
under CondInst, which passes a ``top_module`` (the controller) whose per-location output
travels with each positive (training) or detection (inference).
"""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from condseg.layers import compute_locations

from .head import FCOSHead
from .losses import fcos_losses, flatten_level_major
from .postprocess import fcos_inference
from .targets import fcos_size_ranges, fcos_targets

__all__ = ["FCOS"]


@PROPOSAL_GENERATOR_REGISTRY.register()
class FCOS(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        head: FCOSHead,
        in_features: List[str],
        strides: List[int],
        num_classes: int,
        sizes_of_interest: List[int],
        center_sample: bool = True,
        pos_radius: float = 1.5,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        loc_loss_type: str = "giou",
        loss_weight_cls: float = 1.0,
        score_thresh_train: float = 0.05,
        score_thresh_test: float = 0.05,
        pre_nms_topk_train: int = 1000,
        pre_nms_topk_test: int = 1000,
        post_nms_topk_train: int = 100,
        post_nms_topk_test: int = 100,
        nms_thresh: float = 0.6,
        thresh_with_ctr: bool = False,
    ):
        super().__init__()
        self.head = head
        self.in_features = list(in_features)
        self.strides = list(strides)
        self.num_classes = num_classes
        self.size_ranges = fcos_size_ranges(sizes_of_interest, len(self.in_features))
        self.center_sample = center_sample
        self.pos_radius = pos_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.loc_loss_type = loc_loss_type
        self.loss_weight_cls = loss_weight_cls
        self.score_thresh = {True: score_thresh_train, False: score_thresh_test}
        self.pre_nms_topk = {True: pre_nms_topk_train, False: pre_nms_topk_test}
        self.post_nms_topk = {True: post_nms_topk_train, False: post_nms_topk_test}
        self.nms_thresh = nms_thresh
        self.thresh_with_ctr = thresh_with_ctr

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        f = cfg.MODEL.FCOS
        missing = [name for name in f.IN_FEATURES if name not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.FCOS.IN_FEATURES names {missing}, which the backbone does not produce "
                f"(it gives {sorted(input_shape)})"
            )
        if len(f.FPN_STRIDES) != len(f.IN_FEATURES):
            raise ValueError("MODEL.FCOS.FPN_STRIDES must have one stride per MODEL.FCOS.IN_FEATURES entry")
        for name, stride in zip(f.IN_FEATURES, f.FPN_STRIDES):
            if input_shape[name].stride != stride:
                raise ValueError(
                    f"MODEL.FCOS.FPN_STRIDES gives stride {stride} for {name}, the backbone's is {input_shape[name].stride}"
                )
        if f.BOX_QUALITY != "ctrness":
            raise ValueError(f"MODEL.FCOS.BOX_QUALITY: only 'ctrness' is supported, got {f.BOX_QUALITY!r}")
        if f.LOSS_NORMALIZER_CLS != "fg":
            raise ValueError(f"MODEL.FCOS.LOSS_NORMALIZER_CLS: only 'fg' is supported, got {f.LOSS_NORMALIZER_CLS!r}")
        if f.USE_DEFORMABLE:
            raise NotImplementedError("MODEL.FCOS.USE_DEFORMABLE is not implemented yet")
        head = FCOSHead(
            [input_shape[name] for name in f.IN_FEATURES],
            num_classes=f.NUM_CLASSES,
            num_cls_convs=f.NUM_CLS_CONVS,
            num_box_convs=f.NUM_BOX_CONVS,
            num_share_convs=f.NUM_SHARE_CONVS,
            norm="" if f.NORM == "none" else f.NORM,
            prior_prob=f.PRIOR_PROB,
            use_scale=f.USE_SCALE,
        )
        return {
            "head": head,
            "in_features": f.IN_FEATURES,
            "strides": f.FPN_STRIDES,
            "num_classes": f.NUM_CLASSES,
            "sizes_of_interest": f.SIZES_OF_INTEREST,
            "center_sample": f.CENTER_SAMPLE,
            "pos_radius": f.POS_RADIUS,
            "focal_alpha": f.LOSS_ALPHA,
            "focal_gamma": f.LOSS_GAMMA,
            "loc_loss_type": f.LOC_LOSS_TYPE,
            "loss_weight_cls": f.LOSS_WEIGHT_CLS,
            "score_thresh_train": f.INFERENCE_TH_TRAIN,
            "score_thresh_test": f.INFERENCE_TH_TEST,
            "pre_nms_topk_train": f.PRE_NMS_TOPK_TRAIN,
            "pre_nms_topk_test": f.PRE_NMS_TOPK_TEST,
            "post_nms_topk_train": f.POST_NMS_TOPK_TRAIN,
            "post_nms_topk_test": f.POST_NMS_TOPK_TEST,
            "nms_thresh": f.NMS_TH,
            "thresh_with_ctr": f.THRESH_WITH_CTR,
        }

    def locations(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per level ``(H_l * W_l, 2)`` pixel centres."""
        return [
            compute_locations(f.shape[-2], f.shape[-1], s, device=f.device) for f, s in zip(features, self.strides)
        ]

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        gt_instances: Optional[List[Instances]] = None,
        top_module: Optional[nn.Module] = None,
        gt_centers: Optional[List[torch.Tensor]] = None,
    ):
        """
        Args:
            images: the padded batch; features: backbone outputs by name.
            gt_instances: training targets (``gt_boxes``, ``gt_classes``) per image.
            top_module: optional module mapping a box-tower map ``(N, C, H, W)`` to per-location
                vectors ``(N, K, H, W)`` (CondInst's controller).
            gt_centers: optional per-image ``(G, 2)`` centres for centre sampling.
        Returns:
            ``(results, losses)``. Training: ``results`` is one flat :class:`Instances` of the
            positive locations of the whole batch (fields ``locations``, ``fpn_levels``,
            ``im_inds``, ``gt_inds``, ``logits_pred``, ``ctrness_pred`` and ``top_feats`` if a
            top module is given); ``losses`` the FCOS loss dict. Inference: per image an
            :class:`Instances` of detections (``pred_boxes``, ``scores``, ``pred_classes``,
            ``locations``, ``fpn_levels``, ``top_feats``) in padded-input pixels, and ``{}``.
        """
        feats = [features[name] for name in self.in_features]
        locations = self.locations(feats)
        logits, reg, ctrness, bbox_towers = self.head(feats)
        top_feats = [top_module(t) for t in bbox_towers] if top_module is not None else None

        if not self.training:
            return self._inference(images, locations, logits, reg, ctrness, top_feats), {}

        assert gt_instances is not None, "FCOS needs gt_instances in training"
        targets = fcos_targets(
            locations, self.strides, self.size_ranges,
            [x.gt_boxes.tensor for x in gt_instances], [x.gt_classes for x in gt_instances],
            self.num_classes, self.center_sample, self.pos_radius, gt_centers,
        )
        logits_flat = flatten_level_major(logits)
        ctrness_flat = flatten_level_major(ctrness).squeeze(1)
        out = fcos_losses(
            logits_flat, flatten_level_major(reg), ctrness_flat,
            targets["labels"], targets["reg_targets"], self.num_classes,
            self.focal_alpha, self.focal_gamma, self.loc_loss_type, self.loss_weight_cls,
        )
        pos = out.pop("extras")["pos_inds"]
        positives = Instances((0, 0))
        positives.locations = targets["locations"][pos]
        positives.fpn_levels = targets["fpn_levels"][pos]
        positives.im_inds = targets["im_inds"][pos]
        positives.gt_inds = targets["target_inds"][pos]
        positives.logits_pred = logits_flat[pos]
        positives.ctrness_pred = ctrness_flat[pos]
        if top_feats is not None:
            positives.top_feats = flatten_level_major(top_feats)[pos]
        return positives, out

    def _inference(self, images, locations, logits, reg, ctrness, top_feats):
        dets = fcos_inference(
            locations, logits, reg, ctrness, self.strides,
            self.score_thresh[False], self.pre_nms_topk[False], self.nms_thresh, self.post_nms_topk[False],
            self.thresh_with_ctr, top_feats,
        )
        results = []
        for d, image_size in zip(dets, images.image_sizes):
            inst = Instances(image_size)
            inst.pred_boxes = Boxes(d["boxes"])
            inst.scores = d["scores"]
            inst.pred_classes = d["classes"]
            inst.locations = d["locations"]
            inst.fpn_levels = d["fpn_levels"]
            if "extra" in d:
                inst.top_feats = d["extra"]
            results.append(inst)
        return results
