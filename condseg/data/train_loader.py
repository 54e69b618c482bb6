"""A training data stream that is a pure function of the seed and the iteration.

detectron2's training loader (an infinite sampler, per-worker shuffling, aspect-ratio
buckets filled in the main process, augmentations drawing from each worker's global RNG)
restarts from its beginning when a run resumes, so a resumed run sees other images than
the run it continues. Here the batch of iteration ``t`` on rank ``r`` is a function of
``(seed, t, r, world size)`` alone, whatever the number of data-loader workers:

* **which images** (:class:`BatchPlan`): detectron2's ``TrainingSampler`` stream (a new
  shuffle of the dataset every epoch, or ``RepeatFactorTrainingSampler``'s repeats),
  sharded ``rank::world_size`` and grouped into batches by aspect ratio exactly like
  ``AspectRatioGroupedDataset`` (landscape and portrait buckets, a batch when one is
  full). The shuffles come from ``numpy.random.SeedSequence([seed, epoch])``; resuming at
  iteration ``t`` replays the bucket filling up to ``t`` from the images' sizes (fast:
  integers only, no image is read).
* **how they are augmented**: each sample is mapped with numpy's, Python's and torch's
  global RNGs seeded from ``(seed, t, r, slot, attempt)`` (and restored after).
* **which worker**: worker ``w`` of ``W`` loads the iterations ``start + w + k W``; the
  data loader returns worker results round-robin, i.e. in iteration order.

An image that cannot be read (:class:`condseg.data.UnreadableImage`) is replaced by
another image of its aspect-ratio bucket drawn from ``(seed, t, r, slot, attempt)``,
under ``DATALOADER.BAD_IMAGES: "skip"``; the batch carries what was skipped so the
trainer can count and report it. Under ``"stop"`` the batch carries the error instead.
"""
import contextlib
import logging
import random
import signal
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.utils import comm
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .mapper import UnreadableImage

__all__ = ["BatchPlan", "PlannedBatches", "PlannedTrainLoader", "TrainBatch", "aspect_groups",
           "build_planned_train_loader", "sample_seed", "SAMPLERS"]

#: the ``DATALOADER.SAMPLER_TRAIN`` values whose stream the plan reproduces
SAMPLERS = ("TrainingSampler", "RepeatFactorTrainingSampler")

logger = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("skip", "stop")
MAX_ATTEMPTS = 20  # replacements tried for one slot before giving up


def sample_seed(*keys: int) -> int:
    """A 32-bit seed derived from integers (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_rngs(seed: int):
    """numpy's, Python's and torch's global RNGs seeded with ``seed`` inside, restored after."""
    states = np.random.get_state(), random.getstate(), torch.get_rng_state()
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])
        torch.set_rng_state(states[2])


def aspect_groups(dataset_dicts: Sequence[Dict]) -> Optional[np.ndarray]:
    """``0`` for landscape (``width > height``), ``1`` otherwise, per image, as detectron2's
    ``AspectRatioGroupedDataset`` buckets mapped images (resizing and flipping keep the
    orientation); None when some dict lacks ``height`` / ``width``."""
    try:
        return np.array([0 if d["width"] > d["height"] else 1 for d in dataset_dicts], np.int8)
    except KeyError:
        return None


class BatchPlan:
    """The dataset indices of every batch of one rank, in iteration order.

    Args:
        num_items: images in the dataset.
        batch_size: images per batch on this rank.
        seed: shuffling seed (the same on every rank).
        rank, world_size: this process's shard of the global stream.
        groups: ``(num_items,)`` bucket of each image (:func:`aspect_groups`), or None
            for consecutive batches without grouping.
        repeat_factors: ``(num_items,)`` float repeat factors
            (``RepeatFactorTrainingSampler``: each epoch repeats image i ``floor(r_i)``
            times, and once more with probability ``frac(r_i)``), or None.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 groups: Optional[np.ndarray] = None, repeat_factors: Optional[np.ndarray] = None):
        if num_items <= 0:
            raise ValueError("the training set is empty")
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.groups = None if groups is None else np.asarray(groups)
        self.repeat_factors = None if repeat_factors is None else np.asarray(repeat_factors, np.float64)

    def epoch(self, e: int) -> np.ndarray:
        """The global order of epoch ``e``."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, e]))
        if self.repeat_factors is None:
            return rng.permutation(self.num_items)
        whole = np.floor(self.repeat_factors)
        counts = (whole + (rng.random(self.num_items) < self.repeat_factors - whole)).astype(np.int64)
        return rng.permutation(np.repeat(np.arange(self.num_items), counts))

    def stream(self) -> Iterator[int]:
        """This rank's infinite share ``global[rank::world_size]`` of the epochs."""
        offset, e = 0, 0
        while True:
            order = self.epoch(e)
            first = (self.rank - offset) % self.world_size
            yield from order[first :: self.world_size].tolist()
            offset += len(order)
            e += 1

    def batches(self, start: int = 0) -> Iterator[Tuple[int, List[int]]]:
        """``(iteration, indices)`` for ``iteration = start, start + 1, ...``."""
        buckets: Dict[int, List[int]] = {}
        it = 0
        for index in self.stream():
            key = 0 if self.groups is None else int(self.groups[index])
            bucket = buckets.setdefault(key, [])
            bucket.append(index)
            if len(bucket) == self.batch_size:
                if it >= start:
                    yield it, list(bucket)
                bucket.clear()
                it += 1

    def replacement(self, index: int, iteration: int, slot: int, attempt: int) -> int:
        """Another image of ``index``'s bucket, drawn from the iteration, slot and attempt."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, iteration, self.rank, slot, attempt, 1]))
        if self.groups is None:
            return int(rng.integers(self.num_items))
        same = np.flatnonzero(self.groups == self.groups[index])
        return int(same[rng.integers(len(same))])


class TrainBatch(list):
    """A list of mapped dataset dicts (the model's input), with what loading it took:
    ``iteration``; ``drawn`` images tried; ``skipped`` ``[(file_name, dataset, reason)]``
    replaced because they could not be read; ``error`` (under ``BAD_IMAGES: stop``) the
    message of the first unreadable image, the batch then being empty."""

    def __init__(self, items=(), iteration: int = -1, drawn: int = 0, skipped=(), error: Optional[str] = None):
        super().__init__(items)
        self.iteration, self.drawn, self.skipped, self.error = iteration, drawn, list(skipped), error

    def __reduce__(self):  # data-loader workers pickle it: keep the fields
        return (TrainBatch, (list(self), self.iteration, self.drawn, self.skipped, self.error))


class PlannedBatches(IterableDataset):
    """The batches of a :class:`BatchPlan` from iteration ``start``, mapped, as an
    iterable dataset (use it with ``DataLoader(batch_size=None)``).

    Args:
        dataset_dicts: the training dicts (each may carry ``"dataset_name"``).
        mapper: dict -> model input; raises :class:`UnreadableImage` for an image that
            cannot be read.
        plan: which images.
        bad_images: ``"skip"`` or ``"stop"`` (see the module docstring).
    """

    def __init__(self, dataset_dicts: Sequence[Dict], mapper, plan: BatchPlan, bad_images: str = "skip"):
        if bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"DATALOADER.BAD_IMAGES must be one of {BAD_IMAGE_POLICIES}, got {bad_images!r}")
        self.dicts = DatasetFromList(list(dataset_dicts), copy=False, serialize=True)
        self.mapper, self.plan, self.bad_images = mapper, plan, bad_images
        self.start = 0

    def __iter__(self) -> Iterator[TrainBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for it, indices in self.plan.batches(self.start):
            if (it - self.start) % workers == worker:
                yield self.load(it, indices)

    def load(self, iteration: int, indices: Sequence[int]) -> TrainBatch:
        items, skipped, drawn = [], [], 0
        for slot, index in enumerate(indices):
            for attempt in range(MAX_ATTEMPTS):
                drawn += 1
                record = self.dicts[index]
                try:
                    with seeded_rngs(sample_seed(self.plan.seed, iteration, self.plan.rank, slot, attempt)):
                        items.append(self.mapper(record))
                    break
                except UnreadableImage as e:
                    where = record.get("dataset_name", "the training set")
                    if self.bad_images == "stop":
                        message = f"{e} (dataset {where!r}; DATALOADER.BAD_IMAGES is 'stop')"
                        return TrainBatch([], iteration, drawn, skipped, error=message)
                    skipped.append((e.file_name, where, e.reason))  # the trainer warns, once per file
                    index = self.plan.replacement(index, iteration, slot, attempt)
            else:
                message = f"{MAX_ATTEMPTS} images in a row could not be read (the last: {skipped[-1][0]})"
                return TrainBatch([], iteration, drawn, skipped, error=message)
        return TrainBatch(items, iteration, drawn, skipped)


def _identity(x):
    return x


def _worker_init(_worker_id: int) -> None:
    """Data-loader workers leave signals to the training process: Ctrl-C or a preemption
    stops training after its step, and workers end with it."""
    for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
        if s is not None:
            signal.signal(s, signal.SIG_IGN)


class PlannedTrainLoader:
    """Iterable over the :class:`TrainBatch` es of :class:`PlannedBatches` through a
    ``DataLoader`` with ``num_workers`` processes; :meth:`restart` sets the first
    iteration and the seed before iteration begins (after a resume), :meth:`close` ends
    the workers (they ignore SIGTERM, which a cluster may send to every process of a job:
    the training process decides when to stop)."""

    def __init__(self, dataset: PlannedBatches, num_workers: int):
        self.dataset, self.num_workers = dataset, int(num_workers)
        self._iterators = []

    def restart(self, start_iter: int, seed: int) -> None:
        self.dataset.start, self.dataset.plan.seed = int(start_iter), int(seed)

    def __iter__(self):
        # its own generator: creating the iterator then draws nothing from torch's global RNG,
        # which the steps use (so a resumed run, which creates it later, draws what the
        # uninterrupted one did)
        loader = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers, collate_fn=_identity,
                            worker_init_fn=_worker_init if self.num_workers else None,
                            generator=torch.Generator().manual_seed(self.dataset.plan.seed))
        it = iter(loader)
        self._iterators.append(it)
        return it

    def close(self) -> None:
        for it in self._iterators:
            for w in getattr(it, "_workers", []):
                if w.is_alive():
                    w.kill()
                    w.join()
        self._iterators.clear()


def build_planned_train_loader(cfg, mapper, seed: int) -> PlannedTrainLoader:
    """The training loader of ``cfg`` (``DATASETS.TRAIN``, ``SOLVER.IMS_PER_BATCH`` split
    over the ranks, ``DATALOADER.*``) as a :class:`PlannedTrainLoader` starting at
    iteration 0; each dict carries ``"dataset_name"``."""
    if cfg.DATALOADER.SAMPLER_TRAIN not in SAMPLERS:
        raise ValueError(f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN!r}: the resumable training loader "
                         f"supports {SAMPLERS}")
    dicts = []
    for name in cfg.DATASETS.TRAIN:
        for d in get_detection_dataset_dicts([name], filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS):
            d["dataset_name"] = name
            dicts.append(d)
    world, total = comm.get_world_size(), cfg.SOLVER.IMS_PER_BATCH
    if total % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH {total} must be divisible by the number of processes {world}")
    repeat = None
    if cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
        repeat = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dicts, cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT
        ).numpy()
    groups = aspect_groups(dicts) if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING and groups is None:
        logger.warning("some training dicts have no height/width: batches are not grouped by aspect ratio")
    plan = BatchPlan(len(dicts), total // world, seed, comm.get_rank(), world, groups, repeat)
    logger.info("Resumable training loader: %d images, batch %d per process, %d workers", len(dicts), total // world,
                cfg.DATALOADER.NUM_WORKERS)
    return PlannedTrainLoader(PlannedBatches(dicts, mapper, plan, cfg.DATALOADER.BAD_IMAGES), cfg.DATALOADER.NUM_WORKERS)
