"""CondInst inference stage by stage, for the model case's breakdown: the steps of
``CondInst.forward`` at inference called in the same order on the same submodules and
functions, each inside a timed region, so that every stage's time is its own. What lies
between the regions (concatenating fields, splitting the masks per image, dropping the
internal fields) is not in any of them: it is the total's ``other``.

The results are those of ``model(batched_inputs)`` (a test compares them); with
``previous_release`` the masks are computed and pasted the previous release's way.
"""
import contextlib
import sys
import time
from typing import Dict, List, Tuple

import torch

from condseg.modeling.condinst.condinst import postprocess_masks
from condseg.modeling.fcos.detector import at_output_size, preprocess_images, without_fields
from condseg.modeling.fcos.postprocess import gather_at_detections

__all__ = ["STAGES", "staged_inference"]

# the timed regions, in the order they run; "FPN" is the backbone's call less its ResNet's
STAGES = (
    "preprocess",            # normalise and pad the batch
    "backbone",              # the ResNet (backbone.bottom_up)
    "FPN",                   # lateral and output convs, P6/P7
    "mask branch",           # the shared mask features
    "FCOS head",             # the class and box towers and predictors on P3-P7
    "controller",            # the mask-head parameters at every location
    "FCOS decode + NMS",     # candidates, boxes, class-aware NMS, top-k
    "dynamic mask heads",    # parameters gathered at the detections, the heads, x2 upsampling, sigmoid
    "paste masks",           # boxes to the output size, masks upsampled, cropped, resized, thresholded
)


class _Clock:
    """Seconds spent in named regions (host clock: for the CPU; a CUDA model would need a
    synchronisation at every edge)."""

    def __init__(self):
        self.seconds = {name: 0.0 for name in STAGES}

    @staticmethod
    def now() -> float:
        return time.perf_counter()

    @contextlib.contextmanager
    def region(self, name: str):
        start = self.now()
        try:
            yield
        finally:
            self.seconds[name] += self.now() - start


def staged_inference(model, batched_inputs: List[Dict], previous_release: bool = False) -> Tuple[List[Dict], Dict]:
    """``model(batched_inputs)`` of a CondInst in eval mode, stage by stage.

    Args:
        model: a :class:`~condseg.modeling.condinst.CondInst`, ``eval()``, called under
            ``torch.no_grad()`` by the caller.
        batched_inputs: the model's inputs (``image`` ``(3, H, W)``, ``height``, ``width``).
        previous_release: the previous release's masks instead: the heads, the upsampling
            and the sigmoid one after the other on every instance, each image's
            probabilities copied out of the batch's and again by the empty-box filter, the
            head outputs and FPN levels kept to the end, every instance pasted at once.
    Returns:
        ``(results, seconds)``: the model's outputs and the seconds of each of
        :data:`STAGES`.
    """
    clock = _Clock()
    fcos = model.proposal_generator
    bottom_up = model.backbone.bottom_up
    edges = {}
    hooks = [bottom_up.register_forward_pre_hook(lambda *_: edges.__setitem__("start", clock.now())),
             bottom_up.register_forward_hook(lambda *_: edges.__setitem__("end", clock.now()))]
    try:
        with clock.region("preprocess"):
            images = preprocess_images(batched_inputs, model.pixel_mean, model.pixel_std,
                                       model.backbone.size_divisibility)
        start = clock.now()
        features = model.backbone(images.tensor)
        end = clock.now()
    finally:
        for h in hooks:
            h.remove()
    clock.seconds["backbone"] += edges["end"] - edges["start"]
    clock.seconds["FPN"] += (end - start) - (edges["end"] - edges["start"])
    with clock.region("mask branch"):
        mask_feats = model.mask_branch(features)
    with clock.region("FCOS head"):
        outputs = fcos.predict(features)
    with clock.region("controller"):
        params = [model.controller(t) for t in outputs["towers"]]
    with clock.region("FCOS decode + NMS"):
        dets = fcos.detect(outputs, images.image_sizes)
    padded = tuple(images.tensor.shape[-2:])
    if previous_release:
        return _previous_release_masks(clock, model, dets, params, mask_feats, batched_inputs, images.image_sizes,
                                       padded)
    with clock.region("dynamic mask heads"):
        for i, d in enumerate(dets):
            d.params = gather_at_detections(params, i, d.fpn_levels, d.loc_inds)
    del features, outputs, params
    results = model._inference_masks(dets, mask_feats, batched_inputs, images.image_sizes, padded, clock.region)
    return results, clock.seconds


def _previous_release_masks(clock, model, dets, params, mask_feats, batched_inputs, image_sizes, padded):
    """The previous release's ``CondInst.forward`` after the detections (see
    :func:`staged_inference`)."""
    im_inds = torch.cat([torch.full((len(d),), i, device=model.device, dtype=torch.int64) for i, d in enumerate(dets)])
    cat = lambda name: torch.cat([d.get(name) for d in dets])  # noqa: E731
    with clock.region("dynamic mask heads"):
        for i, d in enumerate(dets):
            d.params = gather_at_detections(params, i, d.fpn_levels, d.loc_inds)
        args = (mask_feats, cat("params"), im_inds, cat("locations"), cat("fpn_levels"))
        global_masks = model._mask_logits(*args).sigmoid()
    for i, d in enumerate(dets):
        d.pred_global_masks = global_masks[im_inds == i]
    with clock.region("paste masks"):
        resized = at_output_size(dets, batched_inputs, image_sizes)
        for r, image_size in zip(resized, image_sizes):
            r.pred_masks = postprocess_masks(r.pred_global_masks, padded, image_size, r.image_size,
                                             chunk_bytes=sys.maxsize)
    return [{"instances": without_fields(r, (*model.internal_fields, "pred_global_masks"))} for r in resized], \
        clock.seconds
