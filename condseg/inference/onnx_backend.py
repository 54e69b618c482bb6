"""A file exported by ``tools/export_model.py``, called like a detectron2 model in eval mode,
so that :class:`~condseg.inference.predictor.Predictor` runs it unchanged
(:meth:`Predictor.from_onnx`).

The exported graph takes one resized image and returns boxes, scores and classes in its
pixels and, for CondInst, mask probabilities; here they are taken to each input's
requested ``height`` x ``width`` as the PyTorch model does: boxes scaled and clipped,
empty boxes dropped (detectron2's ``detector_postprocess``); masks exported at the mask
output stride (``--mask-resolution stride``) pasted by the model's own
:func:`~condseg.modeling.condinst.condinst.postprocess_masks`, masks exported at the
input's size resized bilinearly and thresholded at 0.5 (that function's last step).
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from condseg.config import get_condseg_cfg
from condseg.export import OnnxModel
from condseg.modeling.condinst.condinst import postprocess_masks

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
                inst.mask_probs = torch.from_numpy(out["masks"][:n]).float()
            inst = detector_postprocess(inst, x.get("height", h), x.get("width", w))
            if inst.has("mask_probs"):
                probs = inst.mask_probs
                inst.remove("mask_probs")
                inst.pred_masks = self._paste(probs, (h, w), inst.image_size)
            results.append({"instances": inst})
        return results

    def _paste(self, probs: torch.Tensor, image_size, output_size) -> torch.Tensor:
        """``(D, H_out, W_out)`` bool masks from the file's ``masks`` rows of the kept detections."""
        if self.onnx.mask_resolution == "stride":
            s = self.onnx.mask_stride
            padded = (probs.shape[1] * s, probs.shape[2] * s)
            return postprocess_masks(probs[:, None], padded, image_size, output_size)
        probs = probs[:, : image_size[0], : image_size[1]]
        if not len(probs):
            return torch.zeros((0, *output_size), dtype=torch.bool)
        probs = F.interpolate(probs[:, None], size=tuple(output_size), mode="bilinear", align_corners=False)[:, 0]
        return probs > 0.5
