"""The traced module: one image in, its detections (and CondInst masks) out.

:class:`ExportableModel` holds a condseg :class:`~condseg.modeling.fcos.detector.FCOSDetector`
or :class:`~condseg.modeling.condinst.condinst.CondInst` (prepared by
:func:`~condseg.export.prepare.prepare_for_export`) and computes what the model computes
in eval mode for ``[{"image": image, "height": H, "width": W}]`` (outputs at the input's
own size, no resize), for ONE image:

input normalisation, zero padding to the backbone's ``size_divisibility``, backbone, FPN,
FCOS head, decoding (:func:`~condseg.export.decode.decode_image`: score threshold,
pre-NMS top-k per level, class-aware NMS, post-NMS cap), boxes clipped to the image and
empty ones dropped; for CondInst the controller's parameters at the kept detections, the
mask branch, the dynamic mask heads as matrix products, aligned upsampling to the padded
input, cropped to the image (``mask_resolution="input"``), or the probabilities at the
mask output stride of the padded input (``"stride"``) for the caller to paste.

The caller resizes the image first, as the PyTorch ``Predictor`` does
(``ResizeShortestEdge`` to ``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST``, the values
an export stores in its metadata), in the config's ``INPUT.FORMAT`` channel order.
"""
from typing import Optional, Tuple

import torch
from torch import nn

from condseg.modeling.condinst.condinst import CondInst
from condseg.modeling.fcos.detector import FCOSDetector

from .decode import clip_and_drop_empty, decode_image
from .errors import ExportError
from .masks import aligned_upsample, mask_branch_features, mask_heads_one_image
from .prepare import prepare_for_export

__all__ = ["ExportableModel", "MASK_RESOLUTIONS"]

MASK_RESOLUTIONS = ("input", "stride")


class ExportableModel(nn.Module):
    """``forward(image)`` with ``image`` a ``(3, H, W)`` uint8 or float tensor in the
    config's ``INPUT.FORMAT`` (already resized by the caller) returns a tuple:

    * ``boxes (D, 4)`` float32, XYXY in input pixels, clipped to the image;
    * ``scores (D,)`` float32, sorted descending;
    * ``classes (D,)`` int64, 0-based;
    * CondInst only, ``masks`` float32 mask probabilities; with ``mask_resolution``
      ``"input"``: ``(D, H, W)`` at the input's size (the model's ``pred_masks`` are
      ``masks > 0.5``; a caller that resized the image resizes these bilinearly to the
      original size first, as the model does); ``"stride"``: ``(D, H_pad / s, W_pad / s)``
      with ``s = MODEL.CONDINST.MASK_OUT_STRIDE`` and ``H_pad``, ``W_pad`` the input padded
      to the backbone's size divisibility, what the model hands to
      :func:`~condseg.modeling.condinst.condinst.postprocess_masks` (16x fewer values at
      ``s = 4``; the caller pastes them, e.g. with that function);
    * with ``max_detections = N``: every output padded (zeros) or cut to N rows, and
      ``num_detections ()`` int64, the number of valid rows, ``min(D, N)``.

    D may be 0. :attr:`output_names` names the outputs in order.
    """

    def __init__(self, model: nn.Module, max_detections: Optional[int] = None, mask_resolution: str = "input"):
        super().__init__()
        if not isinstance(model, FCOSDetector):
            raise ExportError(
                f"MODEL.META_ARCHITECTURE {type(model).__name__}: only condseg's FCOSDetector and CondInst export"
            )
        if max_detections is not None and int(max_detections) < 1:
            raise ExportError(f"max_detections must be >= 1, got {max_detections}")
        if mask_resolution not in MASK_RESOLUTIONS:
            raise ExportError(f"mask_resolution must be one of {MASK_RESOLUTIONS}, got {mask_resolution!r}")
        fcos = model.proposal_generator
        if fcos.pre_nms_topk < 1:
            raise ExportError(f"MODEL.FCOS.PRE_NMS_TOPK_TEST must be >= 1 to export, got {fcos.pre_nms_topk}")
        self.model = prepare_for_export(model)
        self.masks_on = isinstance(model, CondInst)
        self.max_detections = None if max_detections is None else int(max_detections)
        self.mask_resolution = mask_resolution

    @property
    def output_names(self) -> Tuple[str, ...]:
        names = ("boxes", "scores", "classes") + (("masks",) if self.masks_on else ())
        return names + (("num_detections",) if self.max_detections else ())

    def _normalised_padded(self, image: torch.Tensor) -> torch.Tensor:
        """``(1, 3, H_pad, W_pad)``: ``(image - mean) / std``, zero-padded bottom/right to
        multiples of the backbone's ``size_divisibility`` (``ImageList.from_tensors``)."""
        m = self.model
        x = (image.to(torch.float32) - m.pixel_mean) / m.pixel_std
        h, w = x.shape[-2:]
        d = max(int(m.backbone.size_divisibility), 1)
        x = nn.functional.pad(x, (0, (w + d - 1) // d * d - w, 0, (h + d - 1) // d * d - h))
        return x[None]

    def forward(self, image: torch.Tensor):
        m, fcos = self.model, self.model.proposal_generator
        h, w = image.shape[-2:]
        features = m.backbone(self._normalised_padded(image))
        logits, reg, ctrness, towers = fcos.head([features[name] for name in fcos.in_features])
        dets = decode_image(
            logits, reg, ctrness, fcos.strides, score_thresh=fcos.score_thresh, pre_nms_topk=fcos.pre_nms_topk,
            nms_thresh=fcos.nms_thresh, post_nms_topk=fcos.post_nms_topk, thresh_with_ctr=fcos.thresh_with_ctr,
            num_classes=fcos.num_classes,
        )
        dets = clip_and_drop_empty(dets, h, w)
        outputs = [dets["boxes"], dets["scores"], dets["classes"]]
        if self.masks_on:
            outputs.append(self._masks(features, towers, dets, h, w))
        if self.max_detections:
            outputs = [_pad_rows(t, self.max_detections) for t in outputs]
            count = torch.ones_like(dets["scores"], dtype=torch.int64).sum()
            outputs.append(torch.clamp(count, max=self.max_detections))
        return tuple(outputs)

    def _masks(self, features, towers, dets, h, w) -> torch.Tensor:
        """``(D, H, W)`` or ``(D, H_pad / s, W_pad / s)`` mask probabilities of the detections."""
        m = self.model
        params = torch.cat([m.controller(t)[0].flatten(1) for t in towers], dim=1)  # (P, sum_l H_l * W_l)
        params = params[:, dets["flat_inds"]].t()
        strides = {name: shape.stride for name, shape in m.backbone.output_shape().items()}
        mask_feats = mask_branch_features(m.mask_branch, features, strides)
        logits = mask_heads_one_image(
            mask_feats, params, dets["locations"], m.sizes_of_interest[dets["fpn_levels"]], m.layer_shapes,
            m.mask_branch.out_stride, m.rel_coords,
        )
        logits = aligned_upsample(logits, m.mask_branch.out_stride // m.mask_out_stride)
        if self.mask_resolution == "stride":
            return logits.sigmoid()[:, 0]
        probs = aligned_upsample(logits.sigmoid(), m.mask_out_stride)
        return probs[:, 0, :h, :w]


def _pad_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` rows of ``t``, zero-padded when it has fewer."""
    padding = t.new_zeros((n, *t.shape[1:]))
    return torch.cat([t, padding])[:n]
