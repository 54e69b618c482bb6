"""A metrics.json written the way a detectron2 training run writes it: scalars put in an
``EventStorage`` iteration by iteration, detectron2's ``JSONWriter`` every ``period``
iterations, evaluation results put as detectron2's ``EvalHook`` puts them (during
training before the writer's line of that iteration; the final one after training, at
``max_iter``, in a line of its own).

``write_metrics(folder, ...)`` returns the file's path and what each key must read back
as: key -> {iteration: value}.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Sequence

from detectron2.utils.events import EventStorage, JSONWriter

__all__ = ["write_metrics", "loss_value", "ap_value"]


def loss_value(key: str, iteration: int, offset: float = 0.0) -> float:
    """A decreasing loss curve, distinct per key."""
    return offset + (1.0 + len(key) % 5) * math.exp(-iteration / 30.0) + 0.01 * (iteration % 3)


def ap_value(key: str, iteration: int, offset: float = 0.0) -> float:
    return offset + (5.0 if key.startswith("bbox") else 3.0) + iteration / 10.0


def write_metrics(folder, losses: Sequence[str] = ("loss_cls", "loss_box"), max_iter: int = 40, period: int = 10,
                  eval_period: int = 20, eval_keys: Sequence[str] = ("bbox/AP", "segm/AP", "segm/AP50"),
                  offset: float = 0.0, start_iter: int = 0) -> tuple:
    """Write (append to) ``folder/metrics.json`` for iterations ``start_iter .. max_iter - 1``.

    Training scalars ``total_loss`` (the sum), each of ``losses`` and ``lr`` are put
    unsmoothed (``smoothing_hint=False``) every iteration, so each written value is the one
    put at its line's iteration; evaluations every ``eval_period`` iterations and at the end.

    Returns:
        ``(path, expected)``: ``expected[key][iteration]`` is the value written.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(os.fspath(folder), "metrics.json")
    expected: Dict[str, Dict[int, float]] = {}
    writer = JSONWriter(path)

    def evaluate(storage):
        results = {k: ap_value(k, storage.iter, offset) for k in eval_keys}
        storage.put_scalars(**results, smoothing_hint=False)
        for k, v in results.items():
            expected.setdefault(k, {})[storage.iter] = v

    with EventStorage(start_iter) as storage:
        for it in range(start_iter, max_iter):
            storage.iter = it
            values = {k: loss_value(k, it, offset) for k in losses}
            values["total_loss"] = sum(values.values())
            values["lr"] = 0.01 * min(1.0, (it + 1) / 10)
            storage.put_scalars(**values, smoothing_hint=False)
            if eval_period and (it + 1) % eval_period == 0 and it + 1 != max_iter:
                evaluate(storage)
            if (it + 1) % period == 0:
                writer.write()
                for k, v in values.items():
                    expected.setdefault(k, {})[it] = v
        storage.iter = max_iter  # detectron2's trainer after training
        evaluate(storage)
        writer.write()
    writer.close()
    return path, expected
