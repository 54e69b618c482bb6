"""``export_onnx``: a condseg model (or the config that builds it) -> one ONNX file.

The graph is traced by ``torch.onnx.export(..., dynamo=True)`` from
:class:`~condseg.export.wrapper.ExportableModel`: input ``image (3, H, W)`` (uint8 by
default), outputs ``boxes, scores, classes[, masks][, num_detections]`` (shapes in the
wrapper's docstring), with H, W and the number of detections D symbolic unless
``static_size`` / ``max_detections`` fix them. The file is written to a temporary name
next to ``path`` and renamed only after the export succeeded; it carries the
``metadata_props`` of :mod:`condseg.export.metadata`.
"""
import os
import tempfile
from typing import Optional, Sequence, Tuple, Union

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn
from torch.fx.experimental import _config as fx_config

from condseg.checkpoint.classes import log_difference
from condseg.config_setup import setup_cfg
from condseg.layers import DeformConv2d

from .metadata import config_metadata, export_metadata
from .nms import TRANSLATIONS
from .errors import ExportError
from .wrapper import ExportableModel

__all__ = ["export_onnx", "check_cfg", "DEFAULT_OPSET", "EXPORTABLE_ARCHITECTURES", "MAX_INPUT_SIZE"]

DEFAULT_OPSET = 20
EXPORTABLE_ARCHITECTURES = ("FCOSDetector", "CondInst")
MAX_INPUT_SIZE = 8192  # upper bound of the symbolic H and W
_INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}


def check_cfg(cfg: CfgNode) -> None:
    """Refuse a config whose model cannot be exported (before anything is built)."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in EXPORTABLE_ARCHITECTURES:
        raise ExportError(f"MODEL.META_ARCHITECTURE {arch}: only condseg's FCOSDetector and CondInst export")
    if len(cfg.MODEL.PIXEL_MEAN) != 3:
        raise ExportError(f"MODEL.PIXEL_MEAN has {len(cfg.MODEL.PIXEL_MEAN)} channels: the export takes (3, H, W) images")


def _model_and_cfg(cfg_or_model, cfg: Optional[CfgNode]) -> Tuple[nn.Module, CfgNode]:
    """The model to export and the config its metadata comes from."""
    if isinstance(cfg_or_model, nn.Module):
        if cfg is None:
            raise ExportError("export_onnx(model, ...) needs cfg=, the config the model was built from (its metadata)")
        cfg = setup_cfg(cfg, freeze=False)
        check_cfg(cfg)
        return cfg_or_model, cfg
    if cfg is not None:
        raise ExportError("pass cfg= only with a model: export_onnx(model, path, cfg=cfg)")
    cfg = setup_cfg(cfg_or_model, freeze=False)
    check_cfg(cfg)
    if cfg.MODEL.WEIGHTS:
        raise ExportError(
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: export_onnx(cfg) builds the model with random weights; load the "
            "weights into the model (condseg.inference.predictor.load_weights_strict) and call "
            "export_onnx(model, path, cfg=cfg), or run tools/export_model.py"
        )
    return build_model(cfg), cfg


def _check_options(model: nn.Module, static_size, opset: int, input_dtype: str):
    if input_dtype not in _INPUT_DTYPES:
        raise ExportError(f"input_dtype must be one of {sorted(_INPUT_DTYPES)}, got {input_dtype!r}")
    if static_size is not None:
        if len(static_size) != 2 or not all(isinstance(s, int) and 0 < s <= MAX_INPUT_SIZE for s in static_size):
            raise ExportError(f"static_size must be (H, W), two ints in 1..{MAX_INPUT_SIZE}, got {static_size!r}")
    if not isinstance(opset, int) or opset < 18:
        raise ExportError(f"opset {opset!r}: the exporter writes opset 18 or later")
    if opset < 19 and any(isinstance(m, DeformConv2d) for m in model.modules()):
        raise ExportError(
            f"opset {opset}: MODEL.RESNETS.DEFORM_ON_PER_STAGE turns on deformable convolutions, "
            "whose ONNX DeformConv needs opset 19 or later"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mask_metadata(wrapper: ExportableModel) -> dict:
    if not wrapper.masks_on:
        return {}
    m = wrapper.model
    return {"mask_resolution": wrapper.mask_resolution, "mask_stride": int(m.mask_out_stride),
            "size_divisibility": max(int(m.backbone.size_divisibility), 1)}


def export_onnx(cfg_or_model: Union[CfgNode, str, nn.Module], path: str, *, cfg: Optional[CfgNode] = None,
                static_size: Optional[Sequence[int]] = None, max_detections: Optional[int] = None,
                opset: int = DEFAULT_OPSET, input_dtype: str = "uint8", mask_resolution: str = "input",
                classes: Optional[dict] = None) -> str:
    """Export a condseg FCOSDetector or CondInst to the ONNX file ``path``.

    Args:
        cfg_or_model: a config (``CfgNode`` or yaml path; the model is built from it with
            random weights, so ``MODEL.WEIGHTS`` must be empty) or a built model (its
            weights as they are; then ``cfg``, its config, is required for the metadata).
        static_size: ``(H, W)``: the input size is fixed to it (else H and W are symbolic,
            1 .. :data:`MAX_INPUT_SIZE`).
        max_detections: N: outputs padded or cut to N rows, plus ``num_detections``.
        opset: the ONNX opset (>= 18; >= 19 with deformable convolutions).
        input_dtype: ``"uint8"`` (what the Predictor passes) or ``"float32"``, both 0..255.
        mask_resolution: CondInst's ``masks`` at the input's size (``"input"``) or at the
            mask output stride (``"stride"``, pasted by the caller; what
            :class:`~condseg.inference.onnx_backend.OnnxRunner` does fastest).
        classes: the class entry of the weights' checkpoint
            (:func:`condseg.checkpoint.classes.read_entry` of what
            :func:`~condseg.inference.predictor.load_weights_strict` returns): the file then
            holds the weights' names and category ids instead of the config's dataset's (a
            warning says how they differ). None: the config's dataset's names.
    Returns:
        ``path``. Raises :class:`~condseg.export.errors.ExportError` (the message names the
        config key or option and the reason) and writes nothing when it cannot export.
    """
    model, cfg = _model_and_cfg(cfg_or_model, cfg)
    static_size = None if static_size is None else tuple(static_size)
    _check_options(model, static_size, opset, input_dtype)
    if classes:
        log_difference(classes, config_metadata(cfg), cfg.MODEL.WEIGHTS or "the weights",
                       "writing the weights' names into the file")
    wrapper = ExportableModel(model, max_detections, mask_resolution).eval()
    size = static_size or (160, 224)  # a traced example; its values do not matter
    example = torch.zeros((3, *size), dtype=_INPUT_DTYPES[input_dtype])
    dynamic = None
    if static_size is None:
        dims = [torch.export.Dim(name, min=1, max=MAX_INPUT_SIZE) for name in ("height", "width")]
        dynamic = ({1: dims[0], 2: dims[1]},)
    try:
        # sizes of 1 need no special case in this graph (ONNX broadcasts), so the exporter
        # may treat the symbolic sizes as any size instead of guarding on 1
        with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, dynamic_shapes=dynamic, input_names=["image"],
                output_names=list(wrapper.output_names), opset_version=opset,
                custom_translation_table=TRANSLATIONS, verbose=False,
            )
    except Exception as e:  # the exporter raises many types; keep its summary
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE}: the export failed: {reason}") from e
    program.model.metadata_props.update(export_metadata(
        cfg, cfg.MODEL.META_ARCHITECTURE, model.proposal_generator.num_classes, wrapper.output_names, input_dtype,
        static_size, wrapper.max_detections, **_mask_metadata(wrapper), classes=classes,
    ))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx.tmp", dir=folder)
    os.close(fd)
    try:
        program.save(tmp, external_data=False)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private; an export is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
