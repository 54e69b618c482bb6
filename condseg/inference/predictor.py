"""``Predictor``: a trained model behind a three-line API (detectron2's ``DefaultPredictor``
analogue, with batches, a confidence threshold, AMP and strict weight loading).

    from condseg import Predictor
    predictor = Predictor("configs/quickstart/condinst_R18_shapes.yaml", "output/quickstart/model_final.pth")
    instances = predictor(cv2.imread("image.jpg"))          # BGR, like cv2 reads it
"""
import contextlib
import logging
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Instances

from condseg.checkpoint import classes as checkpoint_classes
from condseg.config_setup import setup_cfg
from condseg.inference.render import color_of, draw_instances, instance_labels
from condseg.inference.results import category_ids, coco_results_file, instances_to_records
from condseg.layers import fold_batch_norms
from condseg.modeling.model_keys import num_classes as model_num_classes
from condseg.modeling.model_keys import config_value, score_threshold_overrides

__all__ = ["Predictor", "WeightsMismatchError", "load_weights_strict"]

logger = logging.getLogger("condseg")

# keys a checkpoint may lack without harm: statistics counters, and input normalisation
# buffers set from the config
_OPTIONAL_KEYS = ("num_batches_tracked", "pixel_mean", "pixel_std")


class WeightsMismatchError(ValueError):
    """A weights file whose parameters do not fit the model its config builds."""


class _RecordingCheckpointer(DetectionCheckpointer):
    """detectron2's checkpointer (all its formats), keeping what did not fit."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def _listing(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def load_weights_strict(model: torch.nn.Module, weights: str, config_name: str = "the config") -> Dict:
    """Load a detectron2/condseg checkpoint (``.pth`` from ``tools/train_net.py``, ``.pkl``
    from the model zoo, or a converted checkpoint) into ``model`` and refuse a partial fit.

    Returns:
        the checkpoint's other entries (detectron2's ``Checkpointer.load``), e.g. the class
        names training wrote (:func:`condseg.checkpoint.classes.read_entry` reads them).

    Raises:
        FileNotFoundError: ``weights`` is a local path that does not exist.
        WeightsMismatchError: the file is not a checkpoint, or parameters of the model are
            missing from it or have other shapes there (the message names the file and the
            first offending keys). Keys in the file that the model does not have are only
            logged (a checkpoint may carry extra heads).
    """
    checkpointer = _RecordingCheckpointer(model)
    local = checkpointer.path_manager.get_local_path(weights)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"MODEL.WEIGHTS: no such file: {weights}")
    try:
        extra = checkpointer.load(weights)
    except Exception as e:  # unpickling errors come in many types
        raise WeightsMismatchError(f"{weights}: not a model checkpoint torch can load ({type(e).__name__}: {e})") from e
    incompatible = checkpointer.incompatible
    if incompatible is None:
        raise WeightsMismatchError(f"{weights}: not a model checkpoint (no state dict in it)")
    missing = [k for k in incompatible.missing_keys if not k.endswith(_OPTIONAL_KEYS)]
    shapes = [f"{k} {tuple(a)} in the file, {tuple(b)} in the model" for k, a, b in incompatible.incorrect_shapes]
    if missing or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} parameters have other shapes: {_listing(shapes, 3)}")
        if missing:
            parts.append(f"{len(missing)} parameters are missing from it: {_listing(missing)}")
        raise WeightsMismatchError(
            f"{weights} does not match the model built from {config_name}: " + "; ".join(parts)
            + ". Use the config the weights were trained with (the config.yaml next to them)."
        )
    if incompatible.unexpected_keys:
        logger.warning("%s has %d keys the model does not use: %s", weights,
                       len(incompatible.unexpected_keys), _listing(incompatible.unexpected_keys))
    return extra


class Predictor:
    """Run a trained condseg (or any detectron2) model on images.

    Args:
        config: a yaml config file (``_BASE_`` allowed) or a ``CfgNode``.
        weights: checkpoint file; None means the config's ``MODEL.WEIGHTS``.
        opts: ``KEY VALUE`` config overrides, as on the command line.
        device: e.g. ``"cpu"``, ``"cuda"``; None means ``MODEL.DEVICE`` (the CPU when
            CUDA is not available).
        confidence_threshold: keep detections scoring at least this (None: the config's
            own thresholds, e.g. ``MODEL.FCOS.INFERENCE_TH_TEST``).
        input_format: channel order of the images passed in, ``"BGR"`` (OpenCV) or ``"RGB"``.
        fp16: autocast the model to float16 (CUDA only; ignored with a warning on the CPU).

    Calling it with one ``(H, W, 3)`` uint8 image returns its ``Instances`` (``pred_boxes``,
    ``scores``, ``pred_classes`` and ``pred_masks`` ``(N, H, W)`` bool at the image's own
    size, on the CPU); with a list of images, a list, computed in one batched model call.

    Class names and category ids (``metadata``, ``class_names``, ``dataset_ids``: what is
    drawn and written to json) are those the weights were trained on when the checkpoint
    carries them (:mod:`condseg.checkpoint.classes`; a warning says how they differ from
    the config's dataset), else those of ``DATASETS.TEST[0]``.
    """

    def __init__(self, config: Union[str, CfgNode], weights: Optional[str] = None, opts: Sequence[str] = (),
                 device: Optional[str] = None, confidence_threshold: Optional[float] = None,
                 input_format: str = "BGR", fp16: bool = False):
        opts = list(opts)
        if weights is not None:
            opts += ["MODEL.WEIGHTS", weights]
        if device is not None:
            opts += ["MODEL.DEVICE", device]
        if not isinstance(config, CfgNode) and not os.path.isfile(config):
            raise FileNotFoundError(f"config file: no such file: {config}")
        self.config_name = config if isinstance(config, str) else "the given config"
        cfg = setup_cfg(config, opts, freeze=False)
        if confidence_threshold is not None:  # the model's own keys, so that it keeps what can reach it
            cfg.merge_from_list(score_threshold_overrides(cfg, confidence_threshold))
        cfg.freeze()
        model = build_model(cfg)
        classes = None
        if cfg.MODEL.WEIGHTS:
            extra = load_weights_strict(model, cfg.MODEL.WEIGHTS, self.config_name)
            classes = checkpoint_classes.read_entry(extra, cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the model has random weights")
        if cfg.TEST.FOLD_BATCH_NORMS:
            fold_batch_norms(model.eval())
        self._set_up(cfg, model, confidence_threshold, input_format, fp16, classes=classes, source=cfg.MODEL.WEIGHTS)

    @classmethod
    def from_onnx(cls, path: str, confidence_threshold: Optional[float] = None, input_format: str = "BGR",
                  threads: Optional[int] = None) -> "Predictor":
        """A predictor running a file of ``tools/export_model.py`` in ONNX Runtime (on the
        CPU), with the same inputs, outputs and methods. Its score threshold and detection
        cap are those it was exported with: ``confidence_threshold`` filters what it returns.
        ``threads``: ONNX Runtime's intra-op threads (None: its default)."""
        from condseg.export.metadata import WEIGHTS_CLASSES
        from condseg.inference.onnx_backend import OnnxRunner  # onnxruntime only when asked for

        runner = OnnxRunner(path, threads=threads)
        if confidence_threshold is not None:
            key, needed = score_threshold_overrides(runner.cfg, confidence_threshold)[:2]
            exported = config_value(runner.cfg, key)
            if needed < exported:
                logger.warning("%s was exported with %s %s: some detections scoring %s or more may be missing "
                               "(export with %s %s to keep them)", path, key, exported, confidence_threshold, key,
                               needed)
        self = cls.__new__(cls)
        self.config_name = path
        classes = checkpoint_classes.read_entry({checkpoint_classes.KEY: runner.onnx.metadata.get(WEIGHTS_CLASSES)},
                                                path)
        self._set_up(runner.cfg, runner, confidence_threshold, input_format, fp16=False,
                     class_names=runner.onnx.class_names, classes=classes, source=path)
        return self

    def _set_up(self, cfg, model, confidence_threshold, input_format, fp16, class_names=None, classes=None,
                source=""):
        """``class_names``: used when the config's dataset has none; ``classes``: the
        weights' class entry (``source`` names them), used before the config's dataset."""
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR' or 'RGB', not {input_format!r}")
        self.cfg = cfg
        self.input_format = input_format
        self.confidence_threshold = confidence_threshold
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.fp16 = bool(fp16) and self.device.type == "cuda"
        if fp16 and not self.fp16:
            logger.warning("fp16 needs CUDA; running in float32 on %s", self.device)
        self.model = model
        self.model.eval()
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)

        name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused"
        self.metadata = MetadataCatalog.get(name)
        if classes is not None:
            checkpoint_classes.log_difference(classes, self.metadata if len(cfg.DATASETS.TEST) else None, source,
                                              "using the weights' names")
            self.metadata = checkpoint_classes.as_metadata(classes)
        names = list(getattr(self.metadata, "thing_classes", None) or class_names or [])
        self.class_names = names + [str(i) for i in range(len(names), model_num_classes(cfg))]
        self.dataset_ids = category_ids(self.metadata, len(self.class_names))

    # ------------------------------------------------------------------ model
    def _model_input(self, image: np.ndarray) -> Dict:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {shape}")
        if self.input_format != self.cfg.INPUT.FORMAT:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        resized = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray]) -> List[Instances]:
        """One model call on a list of ``(H, W, 3)`` uint8 images -> ``Instances`` each, on
        the CPU, filtered by the confidence threshold."""
        if len(images) == 0:
            return []
        inputs = [self._model_input(im) for im in images]
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with autocast:
            outputs = self.model(inputs)
        results = []
        for out in outputs:
            instances = out["instances"].to("cpu")
            if self.confidence_threshold is not None and len(instances):
                instances = instances[instances.scores >= self.confidence_threshold]
            if instances.has("scores") and instances.scores.dtype != torch.float32:
                instances.scores = instances.scores.float()
            results.append(instances)
        return results

    def __call__(self, images: Union[np.ndarray, Sequence[np.ndarray]]):
        if isinstance(images, np.ndarray):
            return self.predict_batch([images])[0]
        return self.predict_batch(list(images))

    # ------------------------------------------------------------------ outputs
    def to_records(self, instances: Instances) -> List[Dict]:
        """Detections as json-ready records (see :mod:`condseg.inference.results`)."""
        return instances_to_records(instances, self.class_names, self.dataset_ids)

    def to_coco(self, images: Sequence[Dict], instances: Sequence[Instances]) -> Dict:
        """COCO-format json of predictions: ``images`` gives ``{"id", "file_name",
        "height", "width"}`` per image, ``instances`` its predictions (same order)."""
        return coco_results_file(images, [self.to_records(x) for x in instances], self.class_names,
                                 self.dataset_ids)

    def render(self, image: np.ndarray, instances: Instances, colors=None, alpha: float = 0.5) -> np.ndarray:
        """``image`` with the predictions drawn on it (masks, boxes, "class score%"), in
        the channel order it came in. ``colors``: BGR per instance (default: by class)."""
        n = len(instances)
        classes = instances.pred_classes.tolist() if n else []
        if colors is None:
            colors = [color_of(c) for c in classes]
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        order = np.argsort(instances.scores.numpy(), kind="stable") if n else np.zeros(0, np.int64)
        boxes = instances.pred_boxes.tensor.numpy()[order] if n else None
        masks = instances.pred_masks.numpy()[order] if n and instances.has("pred_masks") else None
        labels = instance_labels([classes[i] for i in order], instances.scores[order].tolist() if n else [],
                                 self.class_names)
        out = draw_instances(image, boxes, masks, labels, [colors[i] for i in order], alpha=alpha)
        return out[:, :, ::-1].copy() if self.input_format == "RGB" else out
