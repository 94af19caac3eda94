"""seg_plugins.data.resumable: the batch plan is a function of the seed; a loader started at
batch k yields what a loader started at 0 yields from k on, whatever the worker count."""

import itertools

import numpy as np
import pytest
import torch

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
from seg_plugins.data.resumable import MAX_REPLACEMENTS, BatchPlan, ResumableTrainLoader


def _take(iterable, n, start=0):
    return list(itertools.islice(iterable, start, start + n))


def test_plan_is_a_function_of_the_seed_and_skips_exactly():
    plan = BatchPlan(10, 4, seed=3)
    full = _take(plan.batches(), 12)
    assert [j for j, _ in full] == list(range(12))
    assert _take(BatchPlan(10, 4, seed=3).batches(5), 7) == full[5:]
    assert _take(BatchPlan(10, 4, seed=4).batches(), 12) != full
    # every epoch is a permutation: 12 batches of 4 = 48 samples = 4.8 epochs
    flat = [i for _, b in full for i in b]
    for e in range(4):
        assert sorted(flat[10 * e : 10 * (e + 1)]) == list(range(10))


def test_plan_without_shuffle_is_sequential():
    assert _take(BatchPlan(5, 2, seed=0, shuffle=False).batches(), 3) == [
        (0, [0, 1]),
        (1, [2, 3]),
        (2, [4, 0]),
    ]


def test_aspect_grouping_never_mixes_buckets():
    buckets = [0, 1] * 10
    for _, batch in _take(BatchPlan(20, 4, seed=0, buckets=buckets).batches(), 30):
        assert len({buckets[i] for i in batch}) == 1


def test_plan_rejects_bad_sizes():
    with pytest.raises(ValueError, match="empty"):
        BatchPlan(0, 2, seed=0)
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        BatchPlan(3, 0, seed=0)


def _random_mapper(record):
    """A mapper drawing from all three global RNGs, as augmentations do."""
    import random

    return {
        "id": record["id"],
        "draw": (random.random(), float(np.random.rand()), float(torch.rand(1))),
    }


def _loader(workers, start=0, seed=7, mapper=_random_mapper):
    records = [{"id": i, "width": 8, "height": 8} for i in range(9)]
    loader = ResumableTrainLoader(records, mapper, 3, seed=seed, num_workers=workers)
    loader.start_iter = start
    return loader


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_loader_continues_the_stream_with_the_same_augmentations(workers):
    full = _take(_loader(0), 8)
    assert _take(_loader(workers, start=5), 3) == full[5:]
    assert _take(_loader(workers), 8) == full  # the worker count does not matter


def test_main_process_mapping_leaves_the_global_rngs_alone():
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    _take(_loader(0), 4)
    assert torch.equal(torch.rand(3), expected)


def test_iterating_is_lazy_so_start_and_seed_can_be_set_after_iter():
    loader = _loader(0)
    it = iter(loader)
    loader.start_iter, loader.seed = 2, 9
    assert next(it) == _take(_loader(0, start=2, seed=9), 1)[0]


def _skip_odd(record):
    return None if record["id"] % 2 else _random_mapper(record)


def test_skipped_samples_are_replaced_deterministically():
    first = _take(_loader(0, mapper=_skip_odd), 6)
    assert all(x["id"] % 2 == 0 for batch in first for x in batch)
    assert _take(_loader(2, start=3, mapper=_skip_odd), 3) == first[3:]


def test_a_dataset_of_only_bad_samples_stops_with_a_clear_error():
    with pytest.raises(RuntimeError, match=f"{MAX_REPLACEMENTS} samples in a row"):
        _take(_loader(0, mapper=lambda r: None), 1)
