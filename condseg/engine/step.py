"""One training step that the faults of a long run cannot corrupt.

detectron2's ``SimpleTrainer.run_step`` (and ``AMPTrainer``'s) with, between the
forward and the backward, one small all-reduce in which the ranks agree on what this
step met, so that they all take the same way:

* a **non-finite loss** on any rank: the step is skipped (up to
  ``SOLVER.MAX_NONFINITE_STEPS`` in a row) or training stops with
  :class:`NonFiniteLoss`, the loss dict printed once, nothing saved;
* an **unreadable image** under ``DATALOADER.BAD_IMAGES: "stop"`` (or too many replaced
  under ``"skip"``, past ``DATALOADER.MAX_BAD_IMAGE_FRACTION``): :class:`BadDataError`;
* a **stop signal** on any rank (:mod:`condseg.engine.signals`): the step completes and
  ``stop_signum`` tells the stop hook to save and leave.

The images replaced so far (summed over ranks) go to the event storage as
``data/skipped_images`` (metrics.json, TensorBoard).
"""
import contextlib
import logging
import time
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from .signals import STOP_SIGNALS

__all__ = ["BadDataError", "NonFiniteLoss", "GuardedTrainer", "GuardedAMPTrainer", "agree"]

logger = logging.getLogger("condseg")
MIN_DRAWN_FOR_FRACTION = 20  # the bad-image fraction is judged once this many images were drawn


class NonFiniteLoss(BaseException):
    """The loss became infinite or NaN (a BaseException: detectron2's loop does not log it
    as a crash, and the final evaluation is skipped)."""


class BadDataError(BaseException):
    """An unreadable image under ``DATALOADER.BAD_IMAGES: "stop"``, or too many of them."""


def agree(values: List[int], device) -> List[int]:
    """``values`` summed over the ranks (itself on one process)."""
    if comm.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _loss_text(loss_dict: Dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k} {float(v):.4g}" for k, v in loss_dict.items())


class _GuardedStep:
    """The step of the module docstring, for a SimpleTrainer or an AMPTrainer."""

    stop_request = None  # a StopRequest, set by the trainer
    max_nonfinite = 0
    max_bad_fraction = 1.0

    def _setup_guards(self):
        self.stop_signum = 0
        self.nonfinite_in_a_row = 0
        self.skipped_total = self.drawn_total = 0
        self.bad_files: Dict[str, tuple] = {}  # file -> (dataset, reason), this rank's

    def _note_skipped(self, skipped) -> None:
        for file_name, dataset, reason in skipped:
            if file_name not in self.bad_files:
                logger.warning("an image of %r cannot be read, another one takes its place (warned once per file): "
                               "%s: %s", dataset, file_name, reason)
                self.bad_files[file_name] = (dataset, reason)

    def summarize_bad_files(self) -> None:
        """One warning listing the unreadable files met, if any."""
        if self.bad_files:
            names = ", ".join(list(self.bad_files)[:10]) + (" ..." if len(self.bad_files) > 10 else "")
            logger.warning("%d images were replaced because %d files could not be read: %s (list them all with "
                           "tools/train_net.py --check-data)", self.skipped_total, len(self.bad_files), names)

    def _device(self):
        return next(self.model.parameters()).device if comm.get_world_size() > 1 else "cpu"

    def run_step(self):
        assert self.model.training, "[GuardedTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        error: Optional[str] = getattr(data, "error", None)
        self._note_skipped(getattr(data, "skipped", ()))
        loss_dict, losses = {}, None
        if error is None:
            with self._autocast():
                loss_dict = self.model(data)
                losses = loss_dict if isinstance(loss_dict, torch.Tensor) else sum(loss_dict.values())
                if isinstance(loss_dict, torch.Tensor):
                    loss_dict = {"total_loss": loss_dict}
        nonfinite = losses is not None and not bool(torch.isfinite(losses.detach()).all())
        asked = self.stop_request.signum if self.stop_request is not None else 0
        flags = agree([int(error is not None), int(nonfinite), len(getattr(data, "skipped", ())),
                       int(getattr(data, "drawn", len(data)))] + [int(asked == s) for s in STOP_SIGNALS], self._device())
        bad_batches, nonfinite_ranks, skipped, drawn = flags[:4]
        signals = [s for s, n in zip(STOP_SIGNALS, flags[4:]) if n]
        self.stop_signum = int(signals[0]) if signals else 0
        self._count_images(skipped, drawn)
        if bad_batches:
            raise BadDataError(error or f"another rank met an unreadable image at iteration {self.iter}")
        if nonfinite_ranks:
            self._nonfinite(loss_dict)
            return
        self.nonfinite_in_a_row = 0
        self.optimizer.zero_grad()
        self._backward_and_step(losses, loss_dict, data_time)

    def _count_images(self, skipped: int, drawn: int) -> None:
        self.skipped_total += skipped
        self.drawn_total += drawn
        get_event_storage().put_scalar("data/skipped_images", self.skipped_total, smoothing_hint=False)
        if self.drawn_total >= MIN_DRAWN_FOR_FRACTION and self.skipped_total > self.max_bad_fraction * self.drawn_total:
            raise BadDataError(
                f"{self.skipped_total} of the {self.drawn_total} images drawn so far could not be read "
                f"({100 * self.skipped_total / self.drawn_total:.0f} %, above DATALOADER.MAX_BAD_IMAGE_FRACTION "
                f"{self.max_bad_fraction}): the training data is mostly unreadable; list the broken files with "
                "tools/train_net.py --check-data"
            )

    def _nonfinite(self, loss_dict) -> None:
        self.nonfinite_in_a_row += 1
        text = _loss_text(loss_dict) if loss_dict else "(on another rank)"
        if self.nonfinite_in_a_row > self.max_nonfinite:
            raise NonFiniteLoss(
                f"the loss became infinite or NaN at iteration {self.iter}: {text}"
                + (f" ({self.nonfinite_in_a_row} steps in a row, SOLVER.MAX_NONFINITE_STEPS is {self.max_nonfinite})"
                   if self.max_nonfinite else "")
            )
        logger.warning("non-finite loss at iteration %d (%s): step skipped (%d in a row, at most %d)",
                       self.iter, text, self.nonfinite_in_a_row, self.max_nonfinite)
        self.optimizer.zero_grad()


class GuardedTrainer(_GuardedStep, SimpleTrainer):
    """``SimpleTrainer`` with the guarded step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_guards()

    def _autocast(self):
        return contextlib.nullcontext()

    def _backward_and_step(self, losses, loss_dict, data_time):
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


class GuardedAMPTrainer(_GuardedStep, AMPTrainer):
    """``AMPTrainer`` (CUDA mixed precision, a grad scaler) with the guarded step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_guards()

    def _autocast(self):
        return torch.autocast(device_type="cuda", dtype=self.precision)

    def _backward_and_step(self, losses, loss_dict, data_time):
        self.grad_scaler.scale(losses).backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
