"""``OnnxModel``: a file written by :func:`condseg.export.export_onnx`, run in ONNX Runtime.

    from condseg.export import OnnxModel
    model = OnnxModel("model.onnx")
    out = model(image)  # (3, H, W), already resized, in model.input_format
    out["boxes"], out["scores"], out["classes"], out["masks"]

The session runs on the CPU execution provider with all graph optimisations on, its
worker threads sleeping between runs instead of spinning (so that they leave the cores
to whatever the caller does next, e.g. pasting the masks).
"""
import os
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .errors import NotAnExportError
from .metadata import MARKER, parse_metadata

__all__ = ["OnnxModel"]

_NUMPY_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}


class OnnxModel:
    """An exported condseg model in an ONNX Runtime session.

    Attributes:
        path: the file; metadata: its ``metadata_props`` decoded
        (:func:`condseg.export.metadata.parse_metadata`); class_names, input_format,
        min_size_test, max_size_test, static_size, max_detections, output_names: from it.

    ``model(image)`` with ``image`` a ``(3, H, W)`` tensor or array (any real or uint8
    dtype, values 0..255, channels in :attr:`input_format`, resized by the caller to
    :attr:`min_size_test` / :attr:`max_size_test` as the PyTorch Predictor does) returns a
    dict of numpy arrays: ``boxes (D, 4)`` float32 XYXY px, ``scores (D,)`` float32,
    ``classes (D,)`` int64, for CondInst ``masks`` float32 probabilities (``(D, H, W)``,
    or at :attr:`mask_stride` of the padded input when :attr:`mask_resolution` is
    ``"stride"``), and with a static maximum ``num_detections ()`` int64 (the rows past it
    are padding).
    """

    def __init__(self, path: str, threads: Optional[int] = None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such ONNX file: {path}")
        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as e:  # protobuf decode errors come in several types
            raise NotAnExportError(f"{path}: not an ONNX file ({type(e).__name__}: {e})") from None
        props = {p.key: p.value for p in proto.metadata_props}
        if MARKER not in props:
            raise NotAnExportError(
                f"{path}: not a condseg export (no '{MARKER}' in its metadata); write one with "
                "tools/export_model.py or condseg.export.export_onnx"
            )
        self.path = path
        self.metadata = parse_metadata(props)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = _NUMPY_DTYPES.get(inp.type, np.float32)
        self.output_names: List[str] = [o.name for o in self.session.get_outputs()]

    # ---------------------------------------------------------------- metadata
    @property
    def version(self) -> str:
        return self.metadata[MARKER]

    @property
    def meta_architecture(self) -> str:
        return self.metadata["meta_architecture"]

    @property
    def class_names(self) -> List[str]:
        return list(self.metadata["class_names"])

    @property
    def input_format(self) -> str:
        return self.metadata["input_format"]

    @property
    def min_size_test(self) -> int:
        return self.metadata["min_size_test"]

    @property
    def max_size_test(self) -> int:
        return self.metadata["max_size_test"]

    @property
    def static_size(self) -> Optional[Tuple[int, int]]:
        size = self.metadata.get("static_size")
        return None if size is None else tuple(size)

    @property
    def max_detections(self) -> Optional[int]:
        return self.metadata.get("max_detections")

    @property
    def mask_resolution(self) -> Optional[str]:
        """CondInst: ``"input"`` or ``"stride"`` (files written before the option: ``"input"``)."""
        if "masks" not in self.output_names:
            return None
        return self.metadata.get("mask_resolution", "input")

    @property
    def mask_stride(self) -> Optional[int]:
        return self.metadata.get("mask_stride")

    @property
    def size_divisibility(self) -> Optional[int]:
        return self.metadata.get("size_divisibility")

    @property
    def config(self) -> str:
        """The config the model was exported from (yaml)."""
        return self.metadata["config"]

    # ------------------------------------------------------------------ running
    def _input(self, image: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"{self.path}: expected a (3, H, W) image, got shape {image.shape}")
        if self.static_size and tuple(image.shape[1:]) != self.static_size:
            raise ValueError(
                f"{self.path} was exported for {self.static_size[0]}x{self.static_size[1]} inputs, got "
                f"{image.shape[1]}x{image.shape[2]}"
            )
        return np.ascontiguousarray(image.astype(self.input_dtype, copy=False))

    def __call__(self, image: Union[np.ndarray, torch.Tensor]) -> Dict[str, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: self._input(image)})
        return dict(zip(self.output_names, outputs))
