"""Frames per model call of the video pipeline: fixed, or measured on the first frames.

Measured (:meth:`FramesPerCall.measured`), the first calls alternate between the
candidate sizes (1 and 2 frames by default); the first call of each size warms it up
(one-off allocations and kernel set-up, and ODConv's own first-use measurement with
``MODEL.ODCONV.AUTOTUNE``) and is not counted, then :data:`CALLS` calls of each are
timed. The size with the lowest median model time per frame is kept for the rest of the
run, the smallest unless a larger one is :data:`MARGIN` faster per frame (fewer frames
per call: less latency and memory). Which processor gains from batching differs (on
some, 2 frames per call were slower than 1), hence the measurement.
"""
import logging
import statistics
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, TypeVar

__all__ = ["CALLS", "MARGIN", "FramesPerCall", "batches"]

logger = logging.getLogger("condseg")

T = TypeVar("T")

CALLS = 3  # timed calls per candidate size, after one warm-up call each
MARGIN = 0.05  # a larger size must be this much faster per frame to replace a smaller one


class FramesPerCall:
    """How many frames the next model call gets: ``size`` fixed, or (``size`` None) the
    ``candidates`` measured on the first calls (see the module docstring). ``record``
    each call's frames and model seconds; ``description`` says what was chosen and why."""

    def __init__(self, size: Optional[int] = 1, candidates: Sequence[int] = (1, 2), calls: int = CALLS,
                 margin: float = MARGIN):
        if size is not None and size < 1:
            raise ValueError(f"frames per model call must be at least 1, got {size}")
        if size is None and (len(candidates) < 1 or min(candidates) < 1):
            raise ValueError(f"candidate frames per model call must be at least 1, got {tuple(candidates)}")
        self.size, self.candidates, self.margin = size, tuple(sorted(set(candidates))), margin
        self.measuring = size is None
        self._schedule: List[int] = [c for _ in range(calls + 1) for c in self.candidates] if self.measuring else []
        self._calls = 0
        self._times: Dict[int, List[float]] = {c: [] for c in self.candidates}  # seconds per frame, timed calls
        self.description = f"{size} (fixed)" if size is not None else "not measured yet"

    @classmethod
    def measured(cls, candidates: Sequence[int] = (1, 2), calls: int = CALLS) -> "FramesPerCall":
        return cls(None, candidates, calls)

    def next(self) -> int:
        """Frames for the next call."""
        if self.size is not None:
            return self.size
        return self._schedule[self._calls]

    def record(self, frames: int, seconds: float) -> None:
        """One model call of ``frames`` frames took ``seconds``."""
        if self.size is not None:
            return
        wanted = self._schedule[self._calls]
        warm = self._calls >= len(self.candidates)  # the first call of each size warms it up
        self._calls += 1
        if warm and frames == wanted:  # a short last batch is not representative
            self._times[wanted].append(seconds / frames)
        if self._calls == len(self._schedule):
            self._decide()
        else:
            timed = sum(len(t) for t in self._times.values())
            self.description = f"alternating {' and '.join(map(str, self.candidates))} ({timed} calls timed so far)"

    def _decide(self) -> None:
        per_frame = {c: statistics.median(t) for c, t in self._times.items() if t}
        if not per_frame:
            self.size = self.candidates[0]
            self.description = f"{self.size} (nothing could be timed)"
            return
        chosen = min(per_frame)  # the smallest size, replaced only by one `margin` faster per frame
        for c in sorted(per_frame):
            if per_frame[c] < (1 - self.margin) * per_frame[chosen]:
                chosen = c
        self.size = chosen
        others = ", ".join(f"{c}: {1000 * t:.1f} ms" for c, t in sorted(per_frame.items()) if c != chosen)
        self.description = (f"{chosen}, measured on the first {self._frames()} frames ({1000 * per_frame[chosen]:.1f} ms "
                            f"per frame in the model; {others}); --batch-size fixes it")
        logger.info("video: frames per model call: %s", self.description)

    def _frames(self) -> int:
        return sum(self._schedule)


def batches(items: Iterable[T], frames: FramesPerCall) -> Iterator[List[T]]:
    """Consecutive lists of ``frames.next()`` items (the last one shorter), pulled from
    ``items`` only as each list fills; the size is asked anew for every list."""
    batch: List[T] = []
    size = frames.next()
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
            size = frames.next()
    if batch:
        yield batch
