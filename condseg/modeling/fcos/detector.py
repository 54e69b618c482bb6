"""FCOS as a detection-only meta-architecture (``MODEL.META_ARCHITECTURE: "FCOSDetector"``)."""
from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_proposal_generator
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList, Instances
from torch import nn

__all__ = ["FCOSDetector", "preprocess_images", "gt_instances_of", "at_output_size", "without_fields"]


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


def at_output_size(results: List[Instances], batched_inputs: List[Dict], image_sizes) -> List[Instances]:
    """Each image's detections rescaled to its requested ``height`` x ``width`` (boxes
    clipped, empty ones dropped, with every other field)."""
    return [
        detector_postprocess(r, inp.get("height", size[0]), inp.get("width", size[1]))
        for r, inp, size in zip(results, batched_inputs, image_sizes)
    ]


def without_fields(instances: Instances, names: Sequence[str]) -> Instances:
    """``instances`` with the named fields removed (in place)."""
    for name in names:
        if instances.has(name):
            instances.remove(name)
    return instances


@META_ARCH_REGISTRY.register()
class FCOSDetector(nn.Module):
    """Backbone + FCOS proposal generator, returning detections as final results."""

    # the config keys a caller sets for this model's class count and for a final-score threshold
    num_classes_key = "MODEL.FCOS.NUM_CLASSES"
    # fields that say where a detection comes from, not returned
    internal_fields = ("locations", "fpn_levels", "loc_inds")

    @configurable
    def __init__(self, *, backbone: Backbone, proposal_generator: nn.Module,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float]):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @staticmethod
    def score_threshold_overrides(threshold: float) -> List:
        """Config overrides so that inference keeps every detection that can score at least
        ``threshold``: FCOS scores sqrt(class prob * centerness) and thresholds the class
        prob before NMS, so a final score >= t needs a class prob >= t^2 (which also lets t
        go below the config's 0.05)."""
        return ["MODEL.FCOS.INFERENCE_TH_TEST", float(threshold) ** 2]

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict]):
        images = preprocess_images(batched_inputs, self.pixel_mean, self.pixel_std, self.backbone.size_divisibility)
        features = self.backbone(images.tensor)
        if self.training:
            _, losses = self.proposal_generator(images, features, gt_instances_of(batched_inputs, self.device))
            return losses
        results, _ = self.proposal_generator(images, features)
        return [{"instances": without_fields(r, self.internal_fields)}
                for r in at_output_size(results, batched_inputs, images.image_sizes)]
