"""The guarded training step on one process: non-finite losses, unreadable data, stop signals."""
import signal

import pytest
import torch
from detectron2.utils.events import EventStorage
from torch import nn

from condseg.data.train_loader import TrainBatch
from condseg.engine.signals import StopRequest, TrainingStopped, exit_status
from condseg.engine.step import BadDataError, GuardedTrainer, NonFiniteLoss


class _Model(nn.Module):
    """The loss of a batch is ``w * x`` summed over its items' ``x``."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return {"loss": self.w * sum(torch.tensor(float(x["x"])) for x in batch)}


def _trainer(batches, max_nonfinite=0, max_bad_fraction=1.0):
    model = _Model()
    t = GuardedTrainer(model, iter(batches), torch.optim.SGD(model.parameters(), lr=0.1))
    t.max_nonfinite, t.max_bad_fraction = max_nonfinite, max_bad_fraction
    return t


def _run(trainer, steps):
    with EventStorage(0) as storage:
        for trainer.iter in range(steps):
            storage.iter = trainer.iter
            trainer.run_step()
        return storage


def test_a_normal_step_updates_the_weights_and_counts_no_skipped_image():
    t = _trainer([TrainBatch([{"x": 1.0}], 0, drawn=1)])
    storage = _run(t, 1)
    assert float(t.model.w) == pytest.approx(0.9)
    assert storage.history("data/skipped_images").latest() == 0


def test_a_non_finite_loss_stops_with_the_iteration_and_the_losses():
    t = _trainer([TrainBatch([{"x": 1.0}], 0, 1), TrainBatch([{"x": float("nan")}], 1, 1)])
    with pytest.raises(NonFiniteLoss, match="infinite or NaN at iteration 1: loss nan"):
        _run(t, 2)
    assert float(t.model.w) == pytest.approx(0.9)  # the bad step changed nothing


def test_non_finite_steps_are_skipped_up_to_the_limit():
    batches = [TrainBatch([{"x": v}], i, 1) for i, v in enumerate([1.0, float("inf"), float("nan"), 1.0, float("nan")])]
    t = _trainer(batches, max_nonfinite=2)
    _run(t, 4)  # two bad steps in a row are skipped, the counter restarts after a good one
    assert float(t.model.w) == pytest.approx(0.8)
    t = _trainer([TrainBatch([{"x": float("nan")}], i, 1) for i in range(3)], max_nonfinite=2)
    with pytest.raises(NonFiniteLoss, match="3 steps in a row, SOLVER.MAX_NONFINITE_STEPS is 2"):
        _run(t, 3)


def test_unreadable_images_are_counted_warned_once_and_can_stop_the_run(caplog):
    skipped = [("a.png", "toy", "OSError: broken")]
    t = _trainer([TrainBatch([{"x": 1.0}], i, drawn=2, skipped=skipped) for i in range(3)])
    storage = _run(t, 3)
    assert storage.history("data/skipped_images").latest() == 3
    assert caplog.text.count("a.png") == 1
    t = _trainer([TrainBatch([], 0, 1, skipped, error="a.png: OSError: broken (dataset 'toy'; ...)")])
    with pytest.raises(BadDataError, match="a.png"):
        _run(t, 1)
    t = _trainer([TrainBatch([{"x": 1.0}], i, drawn=3, skipped=skipped * 2) for i in range(10)], max_bad_fraction=0.5)
    with pytest.raises(BadDataError, match=r"14 of the 21 images drawn so far could not be read \(67 %, above DATALOADER.MAX_BAD"):
        _run(t, 10)


def test_a_stop_signal_is_honoured_after_the_step(monkeypatch):
    t = _trainer([TrainBatch([{"x": 1.0}], i, 1) for i in range(2)])
    t.stop_request = StopRequest().install()
    try:
        _run(t, 1)
        assert t.stop_signum == 0
        signal.raise_signal(signal.SIGTERM)  # recorded, not fatal
        _run(t, 1)
    finally:
        t.stop_request.uninstall()
    assert t.stop_signum == signal.SIGTERM and float(t.model.w) == pytest.approx(0.8)  # the step was completed
    assert exit_status(signal.SIGTERM) == 143 and TrainingStopped(signal.SIGUSR1, 3, "x").status == 138


def test_a_second_ctrl_c_interrupts_at_once():
    stop = StopRequest().install()
    try:
        signal.raise_signal(signal.SIGINT)
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.uninstall()
