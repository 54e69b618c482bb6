"""FCOS (Tian et al. 2019) as a detectron2 proposal generator.

``forward`` is the detector on its own (:class:`~condseg.modeling.fcos.detector.FCOSDetector`).
A meta-architecture that predicts more per location (CondInst's controller) runs the three
steps itself: :meth:`FCOS.predict` (head outputs, incl. the box towers), then
:meth:`FCOS.losses` or :meth:`FCOS.detect`, whose results say which location each positive
or detection comes from, so the caller gathers its own per-location outputs there.
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
        score_thresh_test: float = 0.05,
        pre_nms_topk_test: int = 1000,
        post_nms_topk_test: int = 100,
        nms_thresh: float = 0.6,
        thresh_with_ctr: bool = False,
    ):
        super().__init__()
        self.head = head
        self.in_features = list(in_features)
        self.strides = list(strides)
        self.num_classes = num_classes
        self.sizes_of_interest = list(sizes_of_interest)
        self.size_ranges = fcos_size_ranges(sizes_of_interest, len(self.in_features))
        self.center_sample = center_sample
        self.pos_radius = pos_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.loc_loss_type = loc_loss_type
        self.loss_weight_cls = loss_weight_cls
        self.score_thresh = score_thresh_test
        self.pre_nms_topk = pre_nms_topk_test
        self.post_nms_topk = post_nms_topk_test
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
            "score_thresh_test": f.INFERENCE_TH_TEST,
            "pre_nms_topk_test": f.PRE_NMS_TOPK_TEST,
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
        gt_centers: Optional[List[torch.Tensor]] = None,
    ):
        """
        Args:
            images: the padded batch; features: backbone outputs by name.
            gt_instances: training targets (``gt_boxes``, ``gt_classes``) per image.
            gt_centers: optional per-image ``(G, 2)`` centres for centre sampling.
        Returns:
            ``(results, losses)``: in training :meth:`losses`, at inference :meth:`detect`
            and ``{}``.
        """
        outputs = self.predict(features)
        if self.training:
            assert gt_instances is not None, "FCOS needs gt_instances in training"
            return self.losses(outputs, gt_instances, gt_centers)
        return self.detect(outputs, images.image_sizes), {}

    def predict(self, features: Dict[str, torch.Tensor]) -> Dict[str, List[torch.Tensor]]:
        """The head's per-level outputs: ``locations`` ``(H_l * W_l, 2)``, ``logits``
        ``(N, C, H_l, W_l)``, ``reg`` ``(N, 4, H_l, W_l)`` (distances in strides),
        ``ctrness`` ``(N, 1, H_l, W_l)`` and ``towers``, the box towers ``(N, D, H_l, W_l)``."""
        feats = [features[name] for name in self.in_features]
        logits, reg, ctrness, towers = self.head(feats)
        return {"locations": self.locations(feats), "logits": logits, "reg": reg, "ctrness": ctrness, "towers": towers}

    def losses(self, outputs: Dict[str, List[torch.Tensor]], gt_instances: List[Instances],
               gt_centers: Optional[List[torch.Tensor]] = None):
        """``(positives, losses)``: the FCOS loss dict, and one flat :class:`Instances` of the
        positive locations of the whole batch (``locations``, ``fpn_levels``, ``im_inds``,
        ``gt_inds``, ``logits_pred``, ``ctrness_pred``, and ``flat_inds``: their rows in
        :func:`~condseg.modeling.fcos.losses.flatten_level_major` of any per-level map)."""
        targets = fcos_targets(
            outputs["locations"], self.strides, self.size_ranges,
            [x.gt_boxes.tensor for x in gt_instances], [x.gt_classes for x in gt_instances],
            self.num_classes, self.center_sample, self.pos_radius, gt_centers,
        )
        logits_flat = flatten_level_major(outputs["logits"])
        ctrness_flat = flatten_level_major(outputs["ctrness"]).squeeze(1)
        out = fcos_losses(
            logits_flat, flatten_level_major(outputs["reg"]), ctrness_flat,
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
        positives.flat_inds = pos
        return positives, out

    def detect(self, outputs: Dict[str, List[torch.Tensor]], image_sizes) -> List[Instances]:
        """Per image an :class:`Instances` of detections (``pred_boxes`` in padded-input
        pixels, ``scores``, ``pred_classes``, and where each comes from: ``locations``,
        ``fpn_levels``, ``loc_inds`` (cell in its level; see
        :func:`~condseg.modeling.fcos.postprocess.gather_at_detections`))."""
        dets = fcos_inference(
            outputs["locations"], outputs["logits"], outputs["reg"], outputs["ctrness"], self.strides,
            self.score_thresh, self.pre_nms_topk, self.nms_thresh, self.post_nms_topk, self.thresh_with_ctr,
        )
        results = []
        for d, image_size in zip(dets, image_sizes):
            inst = Instances(image_size)
            inst.pred_boxes = Boxes(d["boxes"])
            inst.scores = d["scores"]
            inst.pred_classes = d["classes"]
            inst.locations = d["locations"]
            inst.fpn_levels = d["fpn_levels"]
            inst.loc_inds = d["loc_inds"]
            results.append(inst)
        return results
