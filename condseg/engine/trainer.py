"""Training loop: detectron2's DefaultTrainer with condseg's data, evaluation and DDP set-up."""
import logging
import os
import weakref

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import COCOEvaluator
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from condseg.data import CondsegDatasetMapper

from .hooks import ODConvTemperature

__all__ = ["Trainer", "has_compiled_detectron2_ops", "wrap_ddp"]


def has_compiled_detectron2_ops() -> bool:
    """Whether ``detectron2._C`` loads (it does not for the pure-Python install)."""
    try:
        from detectron2 import _C  # noqa: F401
    except Exception:
        return False
    return True


def wrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel when there are several processes: bound to this process's
    GPU on CUDA, device-less on CPU (gloo). Identity for a single process."""
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    kwargs = {"broadcast_buffers": False}
    if device.type == "cuda":
        kwargs["device_ids"] = [comm.get_local_rank()]
    logging.getLogger(__name__).info(
        "Model wrapped in DistributedDataParallel: world size %d, backend %s, device %s",
        comm.get_world_size(), torch.distributed.get_backend(), device,
    )
    return DistributedDataParallel(model, **kwargs)


def _all_annotations_have_masks(dataset_name: str) -> bool:
    """False (with a warning) when some GT of the dataset is box-only: segm AP is undefined."""
    if all("segmentation" in a for d in DatasetCatalog.get(dataset_name) for a in d.get("annotations", [])):
        return True
    logging.getLogger(__name__).warning(
        "%s has box-only annotations (no segmentation): evaluating boxes only", dataset_name
    )
    return False


class Trainer(DefaultTrainer):
    """detectron2's default training recipe (SGD, warm-up multi-step LR, periodic
    checkpoints, ``TEST.EVAL_PERIOD`` evaluation and a final one, metrics.json and
    TensorBoard events in ``OUTPUT_DIR``) with condseg's mapper and a COCO evaluator that
    never needs detectron2's compiled ops."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_ddp(model)
        amp = cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE.startswith("cuda")
        self._trainer = (AMPTrainer if amp else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        """detectron2's hooks; first, when ``MODEL.ODCONV.TEMPERATURE_ITERS`` > 0, the ODConv
        temperature annealing (its after_step resets T to 1 before any evaluation)."""
        hooks = super().build_hooks()
        od = self.cfg.MODEL.ODCONV
        if od.TEMPERATURE_ITERS > 0:
            hooks.insert(0, ODConvTemperature(od.TEMPERATURE_INIT, od.TEMPERATURE_ITERS))
        return hooks

    @classmethod
    def build_optimizer(cls, cfg, model):
        """SGD as detectron2 builds it, or AdamW (``SOLVER.OPTIMIZER``) with the same
        per-parameter learning rates, weight decay rules and gradient clipping."""
        name = cfg.SOLVER.OPTIMIZER.upper()
        if name == "SGD":
            return super().build_optimizer(cfg, model)
        if name != "ADAMW":
            raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'ADAMW', got {cfg.SOLVER.OPTIMIZER!r}")
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        optimizer = torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
        return maybe_add_gradient_clipping(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=CondsegDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=CondsegDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON and _all_annotations_have_masks(dataset_name) else ("bbox",)
        return COCOEvaluator(
            dataset_name,
            tasks=tasks,
            output_dir=output_folder,
            use_fast_impl=has_compiled_detectron2_ops(),
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
