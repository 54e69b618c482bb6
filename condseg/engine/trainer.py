"""Training loop: detectron2's DefaultTrainer with condseg's data, evaluation, DDP set-up
and fault handling."""
import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model
from detectron2.engine import hooks as detectron2_hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from condseg.checkpoint.classes import from_datasets as train_classes
from condseg.data import CondsegDatasetMapper
from condseg.data.train_loader import SAMPLERS, build_planned_train_loader

from .checkpointer import AtomicCheckpointer
from .checks import check_class_counts
from .evaluation import MarkUnreadable, SkippingCOCOEvaluator, SkippingLoader
from .hooks import EvalUnlessFailed, ODConvTemperature, ReseedEveryStep, StopOnRequest
from .signals import StopRequest
from .step import BadDataError, GuardedAMPTrainer, GuardedTrainer, NonFiniteLoss

__all__ = ["Trainer", "has_compiled_detectron2_ops", "wrap_ddp"]


def has_compiled_detectron2_ops() -> bool:
    """Whether ``detectron2._C`` loads (it does not for the pure-Python install)."""
    try:
        from detectron2 import _C  # noqa: F401
    except Exception:
        return False
    return True


def wrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """detectron2's ``create_ddp_model`` (identity for one process), given ``device_ids``
    itself because detectron2 would bind a CPU (gloo) model to a GPU index."""
    device = next(model.parameters()).device
    ddp = create_ddp_model(model, broadcast_buffers=False,
                           device_ids=[comm.get_local_rank()] if device.type == "cuda" else None)
    if ddp is not model:
        logging.getLogger(__name__).info(
            "Model wrapped in DistributedDataParallel: world size %d, backend %s, device %s",
            comm.get_world_size(), torch.distributed.get_backend(), device,
        )
    return ddp


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
    TensorBoard events in ``OUTPUT_DIR``) with condseg's mapper, a COCO evaluator that
    never needs detectron2's compiled ops, and the fault handling of docs/RELIABILITY.md:

    * the data stream (:mod:`condseg.data.train_loader`) and every step's randomness are
      functions of the run's seed (``SEED``, or a random one kept in the checkpoints) and
      the iteration: a resumed run continues exactly the run it resumes;
    * checkpoints are written atomically, and a resume skips damaged ones
      (:class:`~condseg.engine.checkpointer.AtomicCheckpointer`), and each carries the
      training datasets' class names and category ids (:mod:`condseg.checkpoint.classes`);
    * unreadable images, non-finite losses and stop signals are agreed on by all ranks
      at every step (:mod:`condseg.engine.step`).
    """

    def __init__(self, cfg):
        # not DefaultTrainer.__init__: it registers the hooks before the seed, the guarded
        # step and the atomic checkpointer exist, and builds a loader without the seed
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        self.seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        self.failed = False
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        self.train_loader = self.build_train_loader(cfg, seed=self.seed)
        check_class_counts(cfg, cfg.DATASETS.TRAIN)
        model = wrap_ddp(model)
        amp = cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE.startswith("cuda")
        self._trainer = (GuardedAMPTrainer if amp else GuardedTrainer)(model, self.train_loader, optimizer)
        self._trainer.max_nonfinite = cfg.SOLVER.MAX_NONFINITE_STEPS
        self._trainer.max_bad_fraction = cfg.DATALOADER.MAX_BAD_IMAGE_FRACTION
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # every checkpoint carries the training datasets' class names and ids (condseg.checkpoint.classes)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, classes=train_classes(cfg.DATASETS.TRAIN),
                                               trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        """detectron2's hooks, with: the per-step reseeding first; when
        ``MODEL.ODCONV.TEMPERATURE_ITERS`` > 0, the ODConv temperature annealing (its
        after_step resets T to 1 before any evaluation); periodic checkpoints keeping
        ``SOLVER.CHECKPOINT_KEEP``; writers every ``SOLVER.LOG_PERIOD`` iterations; no
        final evaluation of a failed run; the stop on signals last."""
        built = []
        for h in super().build_hooks():
            if isinstance(h, detectron2_hooks.PeriodicCheckpointer):
                keep = self.cfg.SOLVER.CHECKPOINT_KEEP
                h = detectron2_hooks.PeriodicCheckpointer(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD,
                                                          max_to_keep=keep if keep > 0 else None)
            elif isinstance(h, detectron2_hooks.EvalHook):
                h = EvalUnlessFailed(h._period, h._func)
            elif isinstance(h, detectron2_hooks.PeriodicWriter):
                h = detectron2_hooks.PeriodicWriter(h._writers, period=self.cfg.SOLVER.LOG_PERIOD)
            built.append(h)
        od = self.cfg.MODEL.ODCONV
        if od.TEMPERATURE_ITERS > 0:
            built.insert(0, ODConvTemperature(od.TEMPERATURE_INIT, od.TEMPERATURE_ITERS))
        return [ReseedEveryStep(), *built, StopOnRequest()]

    def state_dict(self):
        return {**super().state_dict(), "seed": self.seed}

    def load_state_dict(self, state_dict):
        self.seed = int(state_dict.get("seed", self.seed))
        super().load_state_dict(state_dict)

    def resume_or_load(self, resume=True):
        """detectron2's, then the data stream restarted at the first iteration to run."""
        super().resume_or_load(resume=resume)
        self.train_loader.restart(self.start_iter, self.seed)

    def save_resumable(self, iteration: int) -> str:
        """A checkpoint of the state after ``iteration`` (the one ``--resume`` continues
        from), unless the newest one already is; its path."""
        name = f"model_{iteration:07d}"
        path = os.path.join(self.cfg.OUTPUT_DIR, name + ".pth")
        if os.path.abspath(self.checkpointer.get_checkpoint_file()) != os.path.abspath(path):
            self.checkpointer.save(name, iteration=iteration)
        comm.synchronize()
        return path

    def train(self):
        """detectron2's loop; stop signals, unreadable data and non-finite losses end it
        with the exceptions of :mod:`condseg.engine.signals` / :mod:`condseg.engine.step`
        (unreadable data under ``"stop"`` after saving the last completed iteration)."""
        stop = StopRequest().install()
        self._trainer.stop_request = stop
        try:
            return super().train()
        except (NonFiniteLoss, BadDataError):
            self.failed = True
            raise
        finally:
            stop.uninstall()
            self._trainer.summarize_bad_files()
            self.train_loader.close()

    def run_step(self):
        self._trainer.iter = self.iter
        try:
            self._trainer.run_step()
        except (NonFiniteLoss, BadDataError) as e:
            self.failed = True
            if isinstance(e, BadDataError) and self.iter > self.start_iter:
                e.checkpoint = self.save_resumable(self.iter - 1)
            raise

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
    def build_train_loader(cls, cfg, seed=None):
        """The resumable loader (:func:`~condseg.data.train_loader.build_planned_train_loader`)
        for the samplers it supports, else detectron2's (whose stream restarts on resume).
        ``seed`` defaults to ``SEED`` (0 when negative: PreciseBN's extra loader)."""
        mapper = CondsegDatasetMapper(cfg, is_train=True)
        if cfg.DATALOADER.SAMPLER_TRAIN not in SAMPLERS:
            logging.getLogger("condseg").warning(
                "DATALOADER.SAMPLER_TRAIN %s: a resumed run will not see the images the interrupted one would have "
                "(the resumable loader supports %s)", cfg.DATALOADER.SAMPLER_TRAIN, SAMPLERS)
            return _RestartableLoader(build_detection_train_loader(cfg, mapper=mapper))
        return build_planned_train_loader(cfg, mapper, max(cfg.SEED, 0) if seed is None else seed)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = MarkUnreadable(CondsegDatasetMapper(cfg, is_train=False))
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON and _all_annotations_have_masks(dataset_name) else ("bbox",)
        return SkippingCOCOEvaluator(
            dataset_name,
            tasks=tasks,
            output_dir=output_folder,
            use_fast_impl=has_compiled_detectron2_ops(),
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            # a dataset without json_file (cleaned, generated) is converted each time: a cached
            # conversion in OUTPUT_DIR would outlive a change of the annotations
            allow_cached_coco=False,
            coco_eval_backend=cfg.TEST.COCO_EVAL_BACKEND,
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's evaluation of every ``DATASETS.TEST`` dataset, past unreadable
        images (:mod:`condseg.engine.evaluation`), after checking the class counts."""
        results = OrderedDict()
        for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
            loader = cls.build_test_loader(cfg, dataset_name)  # loads the dicts, hence the categories
            check_class_counts(cfg, [dataset_name])
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, dataset_name)
            if isinstance(evaluator, SkippingCOCOEvaluator):
                loader = SkippingLoader(loader, evaluator, dataset_name)
            results[dataset_name] = inference_on_dataset(model, loader, evaluator)
            if comm.is_main_process():
                logging.getLogger(__name__).info("Evaluation results for %s in csv format:", dataset_name)
                print_csv_format(results[dataset_name])
                from condseg.report import write_report_of_evaluator  # matplotlib only when evaluating

                report = write_report_of_evaluator(cfg, dataset_name, evaluator)  # None: disabled, or nothing to report
                if report:
                    logging.getLogger(__name__).info("Evaluation report of %s: %s", dataset_name, report)
        return list(results.values())[0] if len(results) == 1 else results


class _RestartableLoader:
    """detectron2's loader behind :class:`~condseg.data.train_loader.PlannedTrainLoader`'s interface."""

    def __init__(self, loader):
        self.loader = loader

    def restart(self, start_iter, seed):
        pass

    def close(self):
        pass

    def __iter__(self):
        return iter(self.loader)
