"""A file exported by ``tools/export_model.py``, called like a detectron2 model in eval mode,
so that :class:`~condseg.inference.predictor.Predictor` runs it unchanged
(:meth:`Predictor.from_onnx`).

The exported graph takes one resized image and returns boxes, scores and classes in its
pixels and, for CondInst, mask probabilities at its size; here they are taken to each
input's requested ``height`` x ``width`` as the PyTorch model does: boxes scaled and
clipped, empty boxes dropped (detectron2's ``detector_postprocess``), masks resized
bilinearly and thresholded at 0.5 (:func:`~condseg.modeling.condinst.condinst.postprocess_masks`'s
last step).
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from condseg.config import get_condseg_cfg
from condseg.export import OnnxModel

__all__ = ["OnnxRunner"]


class OnnxRunner:
    """``runner(batched_inputs)`` -> ``[{"instances": Instances}]``, like a detectron2 model.

    Args:
        path: the ``.onnx`` file; threads: ONNX Runtime's intra-op threads (None: its default).
    Attributes:
        cfg: the config the file was exported from (frozen); onnx: the :class:`OnnxModel`.
    """

    def __init__(self, path: str, threads: Optional[int] = None):
        self.onnx = OnnxModel(path, threads=threads)
        cfg = get_condseg_cfg()
        cfg.merge_from_other_cfg(CfgNode.load_cfg(self.onnx.config))
        cfg.MODEL.DEVICE = "cpu"
        cfg.freeze()
        self.cfg = cfg

    training = False  # for detectron2's inference_context, which switches a model to eval and back

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def _padded(self, image: torch.Tensor) -> torch.Tensor:
        """A static-size export: the image at the top left of a zero canvas of that size."""
        size = self.onnx.static_size
        if size is None:
            return image
        h, w = image.shape[-2:]
        if h > size[0] or w > size[1]:
            raise ValueError(f"{self.onnx.path} takes images up to {size[0]}x{size[1]}, got {h}x{w} after resizing")
        return F.pad(image, (0, size[1] - w, 0, size[0] - h))

    def __call__(self, batched_inputs: List[Dict]) -> List[Dict]:
        results = []
        for x in batched_inputs:
            image = x["image"]
            h, w = image.shape[-2:]
            out = self.onnx(self._padded(image))
            n = int(out["num_detections"]) if "num_detections" in out else len(out["scores"])
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(torch.from_numpy(out["boxes"][:n]).float())
            inst.scores = torch.from_numpy(out["scores"][:n]).float()
            inst.pred_classes = torch.from_numpy(out["classes"][:n]).long()
            if "masks" in out:
                inst.mask_probs = torch.from_numpy(out["masks"][:n, :h, :w]).float()
            inst = detector_postprocess(inst, x.get("height", h), x.get("width", w))
            if inst.has("mask_probs"):
                probs = inst.mask_probs
                inst.remove("mask_probs")
                if len(probs):
                    probs = F.interpolate(probs[:, None], size=inst.image_size, mode="bilinear", align_corners=False)[:, 0]
                    inst.pred_masks = probs > 0.5
                else:
                    inst.pred_masks = torch.zeros((0, *inst.image_size), dtype=torch.bool)
            results.append({"instances": inst})
        return results
