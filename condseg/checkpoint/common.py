"""Pieces shared by the checkpoint converters: reading a checkpoint's state dict, the
conversion report, checking a converted state dict against a model, and writing the
result so that detectron2's ``DetectionCheckpointer`` loads it as is.

A converter module (e.g. :mod:`condseg.checkpoint.adelaidet`) only knows its source's key
names; everything else is here.
"""
import os
import pickle
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["StateDict", "ConversionReport", "load_checkpoint_state_dict", "check_against_model", "save_checkpoint"]

StateDict = Dict[str, torch.Tensor]
WRAPPER_KEYS = ("model", "state_dict")  # where trainer checkpoints keep the model's state dict


def preview(keys: Sequence[str], limit: int = 8) -> str:
    """The first ``limit`` keys, comma-separated, and how many there are in all if more."""
    keys = list(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def strip_common_suffix(old: str, new: str) -> Tuple[str, str]:
    """``old`` and ``new`` with their longest common dotted suffix replaced by ``*``
    (``"bn1.weight", "stem.conv1.norm.weight"`` -> ``"bn1.*", "stem.conv1.norm.*"``); as
    they are if they share none."""
    a, b = old.split("."), new.split(".")
    n = 0
    while n < min(len(a), len(b)) - 1 and a[-1 - n] == b[-1 - n]:
        n += 1
    if n == 0:
        return old, new
    return ".".join(a[:-n]) + ".*", ".".join(b[:-n]) + ".*"


def rename_patterns(renamed: Dict[str, str]) -> Counter:
    """Collapse ``old -> new`` key pairs into ``"old_prefix.* -> new_prefix.*"`` patterns
    (prefixes before the longest common dotted suffix), counted."""
    return Counter("{} -> {}".format(*strip_common_suffix(old, new)) for old, new in renamed.items())


@dataclass
class ConversionReport:
    """What a conversion did, for the user: ``renamed`` maps the checkpoint's names to
    condseg's (unchanged names are not listed), ``dropped`` maps each dropped checkpoint
    key to the reason, ``checks`` lists the checks that passed, ``warnings`` what the
    user should know."""

    source: str = "checkpoint"
    num_input: int = 0
    renamed: Dict[str, str] = field(default_factory=dict)
    dropped: Dict[str, str] = field(default_factory=dict)
    checks: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def original_name(self, key: str) -> Optional[str]:
        """The checkpoint's name of ``key`` (a condseg name) if it was renamed, else None."""
        return next((old for old, new in self.renamed.items() if new == key), None)

    def drop(self, state_dict: StateDict, key: str, reason: str) -> None:
        """Remove ``key`` from a converted ``state_dict`` and record it under its name in
        the checkpoint."""
        del state_dict[key]
        original = self.original_name(key) or key
        self.renamed.pop(original, None)
        self.dropped[original] = reason

    def checkpoint_name(self, key: str) -> str:
        """``key`` (a condseg name), with its name in the checkpoint when it was renamed."""
        old = self.original_name(key)
        return f"{key} ({old} in the checkpoint)" if old else key

    def summary(self, num_output: int) -> str:
        """A few lines: counts, rename patterns, dropped keys by reason, checks, warnings."""
        lines = [
            f"{self.source}: {self.num_input} tensors read, {num_output} converted "
            f"({len(self.renamed)} renamed, {num_output - len(self.renamed)} unchanged), {len(self.dropped)} dropped"
        ]
        lines += [f"  renamed  {pattern} ({n})" for pattern, n in rename_patterns(self.renamed).items()]
        by_reason = defaultdict(list)
        for key, reason in self.dropped.items():
            by_reason[reason].append(key)
        lines += [f"  dropped  {preview(keys, 3)}: {reason}" for reason, keys in by_reason.items()]
        lines += [f"  checked  {check}" for check in self.checks]
        lines += [f"  WARNING  {warning}" for warning in self.warnings]
        return "\n".join(lines)


def _read(path: str):
    # not detectron2's DetectionCheckpointer._load_file: it runs only inside load(), reads .pth
    # files with weights_only=True (refusing trainer files that hold numpy arrays or other
    # objects) and rewrites Caffe2 .pkl keys; this reads every file in full, as it is
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    return torch.load(path, map_location="cpu", weights_only=False)


def _numpy_to_tensor(value):
    """A numeric numpy array or scalar (as in detectron2 .pkl files) as a tensor; anything
    else as is."""
    # not fvcore's Checkpointer._convert_ndarray_to_tensor: it refuses numpy scalars, and stops
    # at the first other entry, where load_checkpoint_state_dict names all of them
    if isinstance(value, (np.ndarray, np.number, np.bool_)) and np.asarray(value).dtype != object:
        return torch.as_tensor(value)
    return value


def load_checkpoint_state_dict(path: str) -> StateDict:
    """The model state dict of a checkpoint file: a trainer checkpoint (the state dict under
    ``"model"``, next to ``"optimizer"``, ``"iteration"``, ..., as detectron2 saves it, or
    under ``"state_dict"``, as PyTorch's ImageNet example scripts save it, next to ``"epoch"``,
    ``"arch"``, ...) or a bare state dict, saved with ``torch.save``; or a detectron2-style
    ``.pkl`` (numpy arrays under ``"model"``), whose arrays become tensors. Key prefixes
    (such as DDP's ``module.``) are left to the converters. Files are unpickled in full:
    convert only trusted files.

    Raises ``FileNotFoundError`` if there is no such file, ``ValueError`` if it cannot be
    read or holds no state dict (a dict of tensors).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        data = _read(path)
    except Exception as e:  # unpickling fails in many ways (truncated file, not a pickle, ...)
        raise ValueError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {e})") from e
    state = data
    if isinstance(data, dict):
        state = next((data[k] for k in WRAPPER_KEYS if isinstance(data.get(k), dict)), data)
    if not isinstance(state, dict) or not state:
        found = type(state).__name__ + (" (empty)" if isinstance(state, dict) else "")
        raise ValueError(
            f"{path}: holds no state dict (a dict of tensors, or one under 'model' or 'state_dict'), but a {found}"
        )
    state = {k: _numpy_to_tensor(v) for k, v in state.items()}
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: holds no state dict: entries that are not named tensors: {preview(bad)}")
    return state


def check_against_model(
    state_dict: StateDict, model: nn.Module, report: Optional[ConversionReport] = None, prefix: str = ""
) -> None:
    """Raise ``ValueError`` unless ``state_dict`` has exactly the keys of
    ``model.state_dict()`` with the same shapes; the message names the checkpoint
    (``report.source``) and every offending key. On success, adds a line to ``report.checks``.

    With a ``prefix`` (e.g. ``"backbone.bottom_up."``) only the model's keys that start with
    it count: ``state_dict`` holds the weights of that part of the model (a pretrained
    backbone for a detector)."""
    report = report or ConversionReport()
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [report.checkpoint_name(k) for k in state_dict if k not in expected]
    problems = [f"missing (in the model, not in the checkpoint): {preview(missing)}"] if missing else []
    problems += [f"unexpected (not in the model): {preview(unexpected)}"] if unexpected else []
    problems += [
        f"shape mismatch: {report.checkpoint_name(k)} is {list(v.shape)} in the checkpoint, "
        f"{list(expected[k].shape)} in the model"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if problems:
        raise ValueError(f"{report.source} does not fit the model:\n  " + "\n  ".join(problems))
    part = f" {prefix}*" if prefix else ""
    report.checks.append(f"keys and shapes equal the model's{part} ({len(expected)} tensors)")


def save_checkpoint(state_dict: StateDict, path: str) -> None:
    """Write ``{"model": state_dict, "__author__": "condseg", "matching_heuristics": False}``
    to ``path``, a ``.pth`` file that ``DetectionCheckpointer`` loads with exact key names
    (``MODEL.WEIGHTS path``). The file appears whole or not at all: it is written to a
    temporary file in the same folder, then renamed over ``path``."""
    if not path.endswith(".pth"):
        raise ValueError(
            f"{path}: the output must be a .pth file (detectron2 reads .pkl files as model-zoo pickles "
            "and matches their keys heuristically)"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such output folder")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"model": state_dict, "__author__": "condseg", "matching_heuristics": False}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
