"""The resumable training stream: batches are a function of (seed, iteration, rank), equal
to detectron2's sampler + aspect-ratio grouping semantics, whatever the number of workers."""
import itertools

import numpy as np
import pytest
import torch

from condseg.data.mapper import UnreadableImage
from condseg.data.train_loader import BatchPlan, PlannedBatches, PlannedTrainLoader, TrainBatch, aspect_groups


def _take(plan, start, n):
    return list(itertools.islice(plan.batches(start), n))


def test_a_resumed_plan_continues_the_uninterrupted_one():
    groups = np.array([i % 3 == 0 for i in range(37)], np.int8)
    plan = BatchPlan(37, 4, seed=5, groups=groups)
    full = _take(plan, 0, 60)
    assert [it for it, _ in full] == list(range(60))
    for start in (1, 9, 31):
        assert _take(BatchPlan(37, 4, seed=5, groups=groups), start, 60 - start) == full[start:]
    assert _take(BatchPlan(37, 4, seed=6, groups=groups), 0, 60) != full  # the seed matters


def test_batches_are_grouped_by_orientation_and_cover_every_image_each_epoch():
    dicts = [{"width": 100 + (i % 2) * 50, "height": 125} for i in range(40)]  # 20 landscape, 20 portrait
    groups = aspect_groups(dicts)
    assert groups.tolist() == [1, 0] * 20
    plan = BatchPlan(40, 4, seed=0, groups=groups)
    batches = _take(plan, 0, 10)  # the first epoch: 40 images, 10 batches of one orientation each
    for _, idx in batches:
        assert len({groups[i] for i in idx}) == 1
    assert sorted(i for _, b in batches for i in b) == list(range(40))
    assert aspect_groups([{"width": 3}]) is None


def test_ranks_share_the_stream_like_detectron2s_training_sampler():
    """Rank r takes global[r::world] of the epochs, as TrainingSampler does: the ranks'
    images of an epoch are disjoint and together the whole dataset."""
    plans = [BatchPlan(24, 3, seed=1, rank=r, world_size=2) for r in range(2)]
    seen = [[i for _, b in _take(p, 0, 4) for i in b] for p in plans]  # 2 x 12 = one epoch
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(24))
    epoch = plans[0].epoch(0)
    assert seen[0] == epoch[0::2].tolist() and seen[1] == epoch[1::2].tolist()


def test_repeat_factors_repeat_images():
    factors = np.array([1.0] * 10 + [3.0] * 2)
    plan = BatchPlan(12, 2, seed=0, repeat_factors=factors)
    counts = np.bincount(plan.epoch(0), minlength=12)
    assert counts[:10].tolist() == [1] * 10 and counts[10:].tolist() == [3, 3]


class _Mapper:
    """Records the global RNG draws made while mapping; image 3 cannot be read."""

    def __call__(self, d):
        if d["image_id"] == 3:
            raise UnreadableImage(d["file_name"], "OSError: broken")
        return {"id": d["image_id"], "np": float(np.random.rand()), "torch": float(torch.rand(()))}


def _dicts(n=12):
    return [{"image_id": i, "file_name": f"{i}.png", "width": 10, "height": 10, "dataset_name": "toy"} for i in range(n)]


def _loader(workers, start=0, seed=3, policy="skip"):
    plan = BatchPlan(12, 2, seed=seed)
    loader = PlannedTrainLoader(PlannedBatches(_dicts(), _Mapper(), plan, policy), workers)
    loader.restart(start, seed)
    return loader


@pytest.mark.parametrize("workers", [1, 2])
def test_the_stream_is_the_same_for_any_number_of_workers_and_from_any_start(workers):
    reference = list(itertools.islice(iter(_loader(0)), 9))
    assert [b.iteration for b in reference] == list(range(9))
    loader = _loader(workers, start=4)
    got = list(itertools.islice(iter(loader), 5))
    loader.close()
    assert [list(b) for b in got] == [list(b) for b in reference[4:]]  # images and augmentation draws
    assert [b.skipped for b in got] == [b.skipped for b in reference[4:]]


def test_an_unreadable_image_is_replaced_and_reported_or_stops_the_batch():
    batches = list(itertools.islice(iter(_loader(0)), 12))
    skipped = [s for b in batches for s in b.skipped]
    assert skipped and all(s == ("3.png", "toy", "OSError: broken") for s in skipped)
    assert all(len(b) == 2 and 3 not in [x["id"] for x in b] for b in batches)
    assert sum(b.drawn for b in batches) == 24 + len(skipped)
    stopped = next(b for b in iter(_loader(0, policy="stop")) if b.error)
    assert len(stopped) == 0 and "3.png" in stopped.error and "BAD_IMAGES is 'stop'" in stopped.error


def test_train_batch_keeps_its_fields_through_pickling():
    import pickle

    b = pickle.loads(pickle.dumps(TrainBatch([{"a": 1}], iteration=4, drawn=3, skipped=[("f", "d", "r")], error=None)))
    assert isinstance(b, TrainBatch) and b == [{"a": 1}] and (b.iteration, b.drawn, b.skipped) == (4, 3, [("f", "d", "r")])


def test_mapping_does_not_disturb_the_callers_rngs():
    torch.manual_seed(0)
    np.random.seed(0)
    expected = (float(torch.rand(())), float(np.random.rand()))
    torch.manual_seed(0)
    np.random.seed(0)
    next(iter(_loader(0)))
    assert (float(torch.rand(())), float(np.random.rand())) == expected


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="DATALOADER.BAD_IMAGES must be one of"):
        PlannedBatches(_dicts(), _Mapper(), BatchPlan(12, 2, 0), "ignore")
