"""Export of condseg models to ONNX and running the files in ONNX Runtime.

A floor next to :mod:`condseg.inference`: it imports ``condseg.modeling``,
``condseg.layers``, ``condseg.config_setup`` and ``condseg.checkpoint.classes`` (the
weights' class names); only tools (and inference's ONNX backend) import it.

* :func:`export_onnx`: FCOSDetector / CondInst -> one ``.onnx`` file (one image in,
  boxes, scores, classes and CondInst masks out; dynamic or static shapes);
* :class:`OnnxModel`: such a file in ONNX Runtime, with its metadata;
* :class:`ExportableModel`: the traced module (the model's inference for one image,
  written so that it traces); :class:`ExportError`: what cannot be exported, and why;
  :class:`NotAnExportError`: a file :class:`OnnxModel` will not open.
"""
from .errors import ExportError, NotAnExportError
from .onnx_export import DEFAULT_OPSET, export_onnx
from .onnx_runtime import OnnxModel
from .wrapper import ExportableModel

__all__ = ["DEFAULT_OPSET", "ExportableModel", "ExportError", "NotAnExportError", "OnnxModel", "export_onnx"]
