"""Training hooks.

``ReseedEveryStep`` makes each step's randomness (CondInst's proposal sampling, dropout,
anything drawing from the global RNGs) a function of the run's seed, the iteration and
the rank, so a resumed run draws what the uninterrupted one would have.

``StopOnRequest``, the last hook, ends a step at which the ranks agreed to stop on a
signal (:mod:`condseg.engine.step`): it saves the checkpoint of that iteration and
raises :class:`condseg.engine.signals.TrainingStopped`.

``EvalUnlessFailed`` is detectron2's ``EvalHook`` that does not evaluate a run that failed.

``ODConvTemperature`` anneals the attention temperature of every ODConv in the model,
as the published ODConv training: linearly from ``MODEL.ODCONV.TEMPERATURE_INIT``
(30 there) to 1 over the first ``MODEL.ODCONV.TEMPERATURE_ITERS`` iterations,
``T(t) = 1 + max(0, (T0 - 1) * (1 - t / N))`` at iteration ``t = 1, 2, ...``.
Evaluation always runs at T = 1 (as published, and as a saved model is used): the hook
sets the annealed value before each step and 1 again after it, before evaluation hooks.
"""
import logging
import random

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.engine.hooks import EvalHook
from detectron2.utils import comm
from torch import nn

from condseg.data.train_loader import sample_seed

from .signals import TrainingStopped

__all__ = ["EvalUnlessFailed", "ODConvTemperature", "ReseedEveryStep", "StopOnRequest", "annealed_temperature",
           "set_temperature"]

STEP_STREAM = 7  # keeps the steps' seeds apart from the data's (sample_seed's first keys)


class ReseedEveryStep(HookBase):
    """Seed torch's (all devices), numpy's and Python's global RNGs at every step from
    ``(trainer.seed, iteration, rank)``."""

    def before_step(self):
        s = sample_seed(self.trainer.seed, STEP_STREAM, self.trainer.iter, comm.get_rank())
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)


class StopOnRequest(HookBase):
    """Save and stop after a step at which the ranks agreed on a stop signal."""

    def after_step(self):
        signum = getattr(self.trainer._trainer, "stop_signum", 0)
        if signum:
            path = self.trainer.save_resumable(self.trainer.iter)
            self.trainer.failed = True  # stopped, not finished: no final evaluation
            raise TrainingStopped(signum, self.trainer.iter, path)


class EvalUnlessFailed(EvalHook):
    """detectron2's EvalHook, but no final evaluation of a run that failed (``trainer.failed``)."""

    def after_train(self):
        if getattr(self.trainer, "failed", False):
            logging.getLogger("condseg").warning("training did not finish normally: the final evaluation is skipped")
            self._func = None
            return
        super().after_train()


def annealed_temperature(iteration: int, init: float, num_iters: int) -> float:
    """``1 + max(0, (init - 1) * (1 - iteration / num_iters))``; 1 when ``num_iters <= 0``.
    ``iteration`` counts from 1."""
    if num_iters <= 0:
        return 1.0
    return 1.0 + max(0.0, (init - 1.0) * (1.0 - iteration / num_iters))


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set the temperature of every module of ``model`` that has ``update_temperature``
    (ODConv2d and its DyConv/CondConv configurations); returns how many there are."""
    count = 0
    for module in model.modules():
        if hasattr(module, "update_temperature"):
            module.update_temperature(temperature)
            count += 1
    return count


class ODConvTemperature(HookBase):
    """Anneal the ODConv temperature during training (see the module docstring)."""

    def __init__(self, init: float, num_iters: int):
        self.init, self.num_iters = float(init), int(num_iters)
        self.temperature = 1.0

    def before_train(self):
        if set_temperature(self.trainer.model, 1.0) == 0:
            logging.getLogger(__name__).warning(
                "MODEL.ODCONV.TEMPERATURE_ITERS is %d but the model has no ODConv layer: nothing to anneal", self.num_iters
            )

    def before_step(self):
        self.temperature = annealed_temperature(self.trainer.iter + 1, self.init, self.num_iters)
        set_temperature(self.trainer.model, self.temperature)

    def after_step(self):
        set_temperature(self.trainer.model, 1.0)
        self.trainer.storage.put_scalar("odconv_temperature", self.temperature, smoothing_hint=False)
