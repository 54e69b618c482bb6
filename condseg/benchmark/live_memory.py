"""The peak of live tensor memory of a call on the CPU: the bytes of the tensors its operators
create that are alive at the same time, at their most. It is what CUDA's
``torch.cuda.max_memory_allocated`` counts on a GPU, and what the process's peak RSS holds
before the allocator adds what it keeps of freed memory (glibc keeps freed heap chunks for
reuse, so the RSS of the same call depends on what ran before it). Scratch buffers an
operator allocates and frees inside itself (oneDNN's) are not tensors and not counted.
"""
import weakref
from typing import Callable, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["LiveTensorPeak", "live_tensor_peak"]


class LiveTensorPeak(TorchDispatchMode):
    """A dispatch mode counting the bytes of the storages that operators create under it,
    until each is freed; ``peak`` is the largest sum at any moment (bytes)."""

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live = {}  # data pointer -> bytes

    def _freed(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in inputs or key in self._live:  # a view, an in-place or out= result
                continue
            self._live[key] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._freed, key)
        return out


def live_tensor_peak(fn: Callable[[], object]) -> Tuple[object, int]:
    """``(fn(), peak)``: the result of ``fn`` and the peak bytes of the tensors alive at once
    while it ran (those it created; what existed before, weights and inputs, is not counted)."""
    mode = LiveTensorPeak()
    with mode:
        out = fn()
    return out, mode.peak
