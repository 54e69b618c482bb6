"""Stop requests from signals: finish the step, save, exit with a documented status.

SIGTERM (a cluster's preemption, ``kill``), SIGUSR1 (SLURM's warning before a time limit,
``sbatch --signal=USR1@120``) and SIGINT (Ctrl-C) only record that a stop was asked for;
the trainer finishes the step it is in, agrees with the other ranks (one of them
receiving the signal stops all), saves a checkpoint at that iteration and leaves with
:class:`TrainingStopped`, whose exit status is ``128 + signal number`` (143 for SIGTERM,
138 for SIGUSR1, 130 for SIGINT), the shell's convention for "ended by this signal".
A second Ctrl-C interrupts at once (``KeyboardInterrupt``).
"""
import logging
import signal
from typing import Optional

__all__ = ["STOP_SIGNALS", "StopRequest", "TrainingStopped", "exit_status"]

STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGUSR1", None), signal.SIGINT) if s is not None)


def exit_status(signum: int) -> int:
    """The process exit status after a stop by ``signum``: ``128 + signum``."""
    return 128 + int(signum)


class TrainingStopped(BaseException):
    """Training stopped on a signal after saving ``checkpoint`` at ``iteration`` (a
    BaseException, like KeyboardInterrupt: not an error of the training code)."""

    def __init__(self, signum: int, iteration: int, checkpoint: Optional[str]):
        super().__init__(f"stopped by {signal.Signals(signum).name} at iteration {iteration}")
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint

    @property
    def status(self) -> int:
        return exit_status(self.signum)


class StopRequest:
    """The first stop signal received by this process (``signum``, 0 for none), once
    :meth:`install` has put the handlers in place."""

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def install(self) -> "StopRequest":
        for s in STOP_SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: do not wait for the step
        if not self.signum:
            logging.getLogger("condseg").warning(
                "received %s: stopping after this iteration (a checkpoint is saved first; a second Ctrl-C stops at once)",
                signal.Signals(signum).name,
            )
            self.signum = int(signum)
