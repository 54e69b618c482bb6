"""FCOS as a detection-only meta-architecture (``MODEL.META_ARCHITECTURE: "FCOSDetector"``)."""
from typing import Dict, List

import torch
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_proposal_generator
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList
from torch import nn

__all__ = ["FCOSDetector", "preprocess_images", "gt_instances_of"]


def preprocess_images(batched_inputs: List[Dict], pixel_mean, pixel_std, size_divisibility: int) -> ImageList:
    """Normalise ``(C, H, W)`` images of a batch and pad them into one ``ImageList``."""
    device = pixel_mean.device
    images = [(x["image"].to(device) - pixel_mean) / pixel_std for x in batched_inputs]
    return ImageList.from_tensors(images, size_divisibility)


def gt_instances_of(batched_inputs: List[Dict], device) -> List:
    """The ``instances`` of each input on ``device``; a clear error when a dataset has none."""
    if any("instances" not in x for x in batched_inputs):
        raise ValueError("training inputs need 'instances' (is the dataset registered with annotations?)")
    return [x["instances"].to(device) for x in batched_inputs]


@META_ARCH_REGISTRY.register()
class FCOSDetector(nn.Module):
    """Backbone + FCOS proposal generator, returning detections as final results."""

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.proposal_generator = build_proposal_generator(cfg, self.backbone.output_shape())
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1), False)
        self.to(torch.device(cfg.MODEL.DEVICE))

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict]):
        images = preprocess_images(batched_inputs, self.pixel_mean, self.pixel_std, self.backbone.size_divisibility)
        features = self.backbone(images.tensor)
        if self.training:
            gt = gt_instances_of(batched_inputs, self.device)
            _, losses = self.proposal_generator(images, features, gt)
            return losses
        results, _ = self.proposal_generator(images, features)
        return self.postprocess(results, batched_inputs, images)

    # fields the detector carries internally and does not return
    internal_fields = ("locations", "fpn_levels", "top_feats")

    def postprocess(self, results, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """Rescale each image's detections to its requested ``height`` x ``width`` (boxes
        clipped, empty ones dropped), let :meth:`finish_instances` add outputs, and strip
        the internal fields."""
        processed = []
        for res, inp, image_size in zip(results, batched_inputs, images.image_sizes):
            out_size = (inp.get("height", image_size[0]), inp.get("width", image_size[1]))
            r = detector_postprocess(res, *out_size)
            self.finish_instances(r, image_size, tuple(images.tensor.shape[-2:]))
            for name in self.internal_fields:
                if r.has(name):
                    r.remove(name)
            processed.append({"instances": r})
        return processed

    def finish_instances(self, instances, image_size, padded_size) -> None:
        """Hook for subclasses: complete postprocessed ``instances`` (at output size) in place."""
