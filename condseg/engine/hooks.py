"""Training hooks.

``ODConvTemperature`` anneals the attention temperature of every ODConv in the model,
as the published ODConv training: linearly from ``MODEL.ODCONV.TEMPERATURE_INIT``
(30 there) to 1 over the first ``MODEL.ODCONV.TEMPERATURE_ITERS`` iterations,
``T(t) = 1 + max(0, (T0 - 1) * (1 - t / N))`` at iteration ``t = 1, 2, ...``.
Evaluation always runs at T = 1 (as published, and as a saved model is used): the hook
sets the annealed value before each step and 1 again after it, before evaluation hooks.
"""
import logging

from detectron2.engine import HookBase
from torch import nn

__all__ = ["ODConvTemperature", "annealed_temperature", "set_temperature"]


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
