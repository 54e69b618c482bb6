"""Checkpoints that cannot be half-written, and a resume that finds the newest intact one.

detectron2's checkpointer writes ``model_XXXXXXX.pth`` and ``last_checkpoint`` in place:
a process killed while saving, or a full disk, leaves a truncated file that looks
finished, and ``--resume`` then fails on it even when the previous checkpoint is intact.
:class:`AtomicCheckpointer` writes every file to a temporary name in the same folder,
flushes and fsyncs it, renames it over the target and fsyncs the folder, for the
checkpoint first and ``last_checkpoint`` after. On resume it tries ``last_checkpoint``'s
file, then every other ``model_*.pth`` of the folder, newest first, and loads the first
that loads, naming each one it had to pass over.
"""
import logging
import os
import re
import shutil
from typing import List, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer

from condseg.checkpoint.classes import KEY as CLASSES_KEY

__all__ = ["AtomicCheckpointer", "CheckpointWriteError", "NoIntactCheckpointError", "atomic_write", "checkpoint_files"]

logger = logging.getLogger(__name__)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, quota, permissions); the files that
    were there before are untouched."""


class NoIntactCheckpointError(RuntimeError):
    """``--resume`` found checkpoints in the output folder, and none of them loads."""


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every file system lets a folder be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write) -> None:
    """``write(f)`` into a temporary file next to ``path``, then flush, fsync, rename over
    ``path`` and fsync the folder: ``path`` is either its old content or the new one.

    Raises:
        CheckpointWriteError: naming the folder and the reason (the temporary file removed).
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        if os.path.exists(tmp):
            os.remove(tmp)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise CheckpointWriteError(
            f"could not write {os.path.basename(path)} in {folder}: {reason} ({_free_space(folder)}); "
            "the checkpoints already there are intact"
        ) from e
    _fsync_folder(folder)


def _free_space(folder: str) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free there: a full disk, a quota or a file-size limit?"
    except OSError:
        return "is the disk full?"


_ITERATION = re.compile(r"model_(\d+)\.pth$")


def checkpoint_files(folder: str) -> List[str]:
    """``model_final.pth`` and the ``model_<iteration>.pth`` files of ``folder``, newest
    first (by the iteration in the name; ``model_final`` first)."""
    if not os.path.isdir(folder):
        return []
    named = []
    for name in os.listdir(folder):
        m = _ITERATION.match(name)
        if m:
            named.append((int(m.group(1)), name))
        elif name == "model_final.pth":
            named.append((float("inf"), name))
    return [os.path.join(folder, name) for _, name in sorted(named, reverse=True)]


class AtomicCheckpointer(DetectionCheckpointer):
    """detectron2's ``DetectionCheckpointer`` with atomic saves and a resume that skips
    damaged checkpoints (see the module docstring). Saving is a no-op on other ranks
    than the main one, as in detectron2. Remote folders (not a local directory) keep
    detectron2's own writing.

    ``classes``: the class entry of the training datasets
    (:func:`condseg.checkpoint.classes.from_datasets`), written into every checkpoint it
    saves under :data:`condseg.checkpoint.classes.KEY` (None: nothing written)."""

    def __init__(self, model, save_dir: str = "", *, classes: Optional[dict] = None, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.classes = classes

    def _local(self) -> bool:
        return bool(self.save_dir) and os.path.isdir(self.save_dir)

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if self.classes is not None:
            kwargs = {CLASSES_KEY: self.classes, **kwargs}
        if not self._local():
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._local():
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename.encode()))

    def _candidates(self) -> List[str]:
        """``last_checkpoint``'s file first (when it names one), then the others, newest first."""
        files = checkpoint_files(self.save_dir)
        tagged = super().get_checkpoint_file() if super().has_checkpoint() else ""
        if tagged and os.path.basename(tagged) and os.path.isfile(tagged):
            files = [tagged] + [f for f in files if os.path.abspath(f) != os.path.abspath(tagged)]
        elif super().has_checkpoint() and not getattr(self, "_warned_tag", False):
            self._warned_tag = True
            logger.warning("%s names no checkpoint file (%r): using the newest intact model_*.pth of %s",
                           os.path.join(self.save_dir, "last_checkpoint"), os.path.basename(tagged), self.save_dir)
        return files

    def has_checkpoint(self) -> bool:
        if not self._local():
            return super().has_checkpoint()
        return bool(self._candidates())

    def resume_or_load(self, path: str, *, resume: bool = True):
        if not (resume and self._local()):
            return super().resume_or_load(path, resume=resume)
        candidates = self._candidates()
        if not candidates:
            return self.load(path, checkpointables=[])
        for candidate in candidates:
            try:  # read it once to know it is intact; detectron2's load (DDP-aware) then reads it again
                if not isinstance(self._torch_load(candidate), dict):
                    raise ValueError("not a checkpoint dict")
            except Exception as e:  # truncated, empty, not a torch file: unpickling errors come in many types
                logger.warning("checkpoint %s does not load (%s: %s); trying the previous one",
                               candidate, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                continue
            self.resumed_from = candidate
            return self.load(candidate)
        raise NoIntactCheckpointError(
            f"--resume: none of the {len(candidates)} checkpoints in {self.save_dir} loads "
            f"({', '.join(os.path.basename(c) for c in candidates)}); move them away to start afresh"
        )
