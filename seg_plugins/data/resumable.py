"""A training loader whose batches are a function of (seed, iteration) alone, so that a run
killed and resumed at iteration k is fed exactly the batches the uninterrupted run was fed
from iteration k on (DATALOADER.RESUMABLE, on by default).

detectron2's training loader cannot do this: its ``TrainingSampler`` restarts the stream from
the beginning on every start, its workers draw augmentations from RNGs seeded per process
start, and with several workers each one batches its own shard of the stream, so the samples
consumed after k iterations are not a prefix of any fixed sequence. Here:

- **the plan** (:class:`BatchPlan`): global batch j is a list of dataset indices fixed by the
  seed: the indices of epoch e in the order of ``torch.randperm`` under seed (seed, e), cut
  into consecutive batches of the total batch size, or with aspect-ratio grouping (as
  detectron2's ``AspectRatioGroupedDataset``: landscape and portrait images in separate
  batches) filled bucket by bucket in that order, leftovers carried into the next epoch.
  Rank r of a multi-process run takes its slice of every global batch;
- **the randomness of each sample** (crop, flip, scale, photometric changes, whatever the
  mapper draws from ``random``, ``numpy.random`` or ``torch``) is seeded from
  (seed, j, rank, slot) just before the sample is mapped; in the main process (no workers)
  the global RNG states are restored afterwards, so the model's own randomness (dropout) is
  not disturbed;
- **the workers**: worker w of W maps whole batches j = start + w, start + w + W, ... and
  PyTorch's DataLoader returns them in that order, so the batches reach the model in plan
  order whatever DATALOADER.NUM_WORKERS is.

Resuming: the Trainer sets ``start_iter`` (and the checkpoint's seed) before the first batch
is drawn; batches before it are skipped in the plan (index arithmetic only, no image read).
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from detectron2.data import build_detection_train_loader
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm
from torch.utils import data as torchdata

__all__ = ["BatchPlan", "ResumableTrainLoader", "build_train_loader"]

logger = logging.getLogger(__name__)

# A mapper that returns None (DATASETS.SKIP_BAD_SAMPLES) gets another sample, drawn from the
# sample's own seeded RNG; after this many in a row the dataset is deemed unusable.
MAX_REPLACEMENTS = 100


def _landscape(record: dict) -> int:
    """1 for width >= height, 0 otherwise; 1 when the record has no size."""
    w, h = record.get("width"), record.get("height")
    return 1 if w is None or h is None or w >= h else 0


class BatchPlan:
    """Global batches of dataset indices, a function of the seed only.

    Args:
        num_records: dataset size N.
        total_batch_size: images per global batch (all ranks together).
        seed: the plan's seed.
        shuffle: permute each epoch (True) or take indices in order.
        buckets: optional per-record bucket ids (aspect-ratio grouping): each batch then
            holds records of one bucket only.
    """

    def __init__(
        self,
        num_records: int,
        total_batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
        buckets: Optional[list] = None,
    ):
        if num_records < 1:
            raise ValueError("the training dataset is empty: nothing to load")
        if total_batch_size < 1:
            raise ValueError(f"SOLVER.IMS_PER_BATCH must be >= 1, got {total_batch_size}")
        if buckets is not None and len(buckets) != num_records:
            raise ValueError(f"{len(buckets)} bucket ids for {num_records} records")
        self.num_records = num_records
        self.total_batch_size = total_batch_size
        self.seed = int(seed)
        self.shuffle = shuffle
        self.buckets = buckets

    def _epoch_order(self, epoch: int) -> list:
        if not self.shuffle:
            return list(range(self.num_records))
        g = torch.Generator()
        g.manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
        return torch.randperm(self.num_records, generator=g).tolist()

    def batches(self, start: int = 0) -> Iterator[tuple]:
        """(j, indices of global batch j) for j = start, start + 1, ... (endless)."""
        j = 0
        pending: dict = {}
        epoch = 0
        while True:
            for index in self._epoch_order(epoch):
                key = 0 if self.buckets is None else self.buckets[index]
                bucket = pending.setdefault(key, [])
                bucket.append(index)
                if len(bucket) == self.total_batch_size:
                    if j >= start:
                        yield j, list(bucket)
                    bucket.clear()
                    j += 1
            epoch += 1


@contextlib.contextmanager
def _seeded_rngs(seed_words: list, restore: bool):
    """Seed python's, numpy's and torch's global RNGs from ``seed_words``; with ``restore``,
    put the previous states back afterwards."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if restore else None
    state = np.random.SeedSequence(seed_words).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))
    try:
        yield np.random.default_rng(state)
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class _RankBatches(torchdata.IterableDataset):
    """This rank's mapped batches of the plan from ``start`` on; worker w of W maps the
    batches j with (j - start) % W == w."""

    def __init__(self, records, mapper, plan: BatchPlan, rank: int, world: int, start: int):
        self.records = records
        self.mapper = mapper
        self.plan = plan
        self.rank = rank
        self.world = world
        self.start = start
        self.per_rank = plan.total_batch_size // world

    def __iter__(self):
        info = torchdata.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        in_main = info is None
        lo = self.rank * self.per_rank
        for j, indices in self.plan.batches(self.start):
            if (j - self.start) % workers != worker:
                continue
            mine = indices[lo : lo + self.per_rank]
            yield [self._map(j, slot, index, in_main) for slot, index in enumerate(mine)]

    def _map(self, j: int, slot: int, index: int, in_main: bool) -> dict:
        words = [self.plan.seed, j, self.rank, slot]
        with _seeded_rngs(words, restore=in_main) as rng:
            for _ in range(MAX_REPLACEMENTS):
                mapped = self.mapper(self.records[index])
                if mapped is not None:
                    return mapped
                index = int(rng.integers(len(self.records)))  # the mapper skipped it
        raise RuntimeError(
            f"{MAX_REPLACEMENTS} samples in a row were skipped as bad (DATASETS.SKIP_BAD_SAMPLES)"
            f"; the training set is unusable: run tools/check_dataset.py on it"
        )


def _list_collate(batch):
    return batch


class ResumableTrainLoader:
    """An endless iterable of this rank's training batches (lists of mapped dicts, as
    detectron2's loaders yield), starting at batch ``start_iter``.

    ``iter(loader)`` is lazy: nothing is read and no worker starts until the first batch is
    drawn, so the Trainer may set ``start_iter`` and ``seed`` after building it (on resume).
    """

    def __init__(
        self,
        dataset: list,
        mapper: Callable[[dict], Optional[dict]],
        total_batch_size: int,
        *,
        seed: int,
        num_workers: int = 0,
        shuffle: bool = True,
        aspect_ratio_grouping: bool = True,
    ):
        self.world = comm.get_world_size()
        self.rank = comm.get_rank()
        if total_batch_size % self.world != 0:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH={total_batch_size} is not divisible by the "
                f"{self.world} processes; make it a multiple of the number of processes"
            )
        self.num_records = len(dataset)
        self.records = DatasetFromList(dataset, copy=False, serialize=True)
        self.buckets = [_landscape(r) for r in dataset] if aspect_ratio_grouping else None
        self.mapper = mapper
        self.total_batch_size = total_batch_size
        self.seed = int(seed)
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.start_iter = 0

    def plan(self) -> BatchPlan:
        return BatchPlan(
            self.num_records,
            self.total_batch_size,
            self.seed,
            shuffle=self.shuffle,
            buckets=self.buckets,
        )

    def __iter__(self):
        return self._batches()

    def _batches(self):
        start = self.start_iter
        stream = _RankBatches(self.records, self.mapper, self.plan(), self.rank, self.world, start)
        if start:
            logger.info(f"Training data resumes at batch {start} (seed {self.seed})")
        loader = torchdata.DataLoader(
            stream,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_list_collate,
            persistent_workers=False,
            # its own generator: DataLoader would otherwise draw the workers' base seed from
            # the global torch RNG when iteration starts, shifting the model's random draws
            # (dropout) in a resumed run; the workers reseed per sample anyway.
            generator=torch.Generator().manual_seed(self.seed),
        )
        yield from loader


def build_train_loader(cfg, dataset: list, mapper: Callable):
    """The training loader of ``dataset`` (records) and ``mapper``: a
    :class:`ResumableTrainLoader` with DATALOADER.RESUMABLE (and detectron2's
    TrainingSampler), else detectron2's ``build_detection_train_loader``."""
    if cfg.DATALOADER.RESUMABLE:
        if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
            return ResumableTrainLoader(
                dataset,
                mapper,
                cfg.SOLVER.IMS_PER_BATCH,
                seed=cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed(),
                num_workers=cfg.DATALOADER.NUM_WORKERS,
                aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            )
        logger.warning(
            f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN}: detectron2's loader, "
            f"which restarts its stream on --resume (DATALOADER.RESUMABLE supports "
            f"TrainingSampler only)"
        )
    return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)
