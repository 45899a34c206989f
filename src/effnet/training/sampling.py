"""Deterministic sampling, the first pillar of bitwise resume: the sample order of an epoch is a
permutation drawn from (seed, epoch) alone, and each sample's augmentation is seeded by (seed,
epoch, index), so neither depends on which worker or which run produced it."""

from __future__ import annotations

import torch


class SeededAugment(torch.utils.data.Dataset):
    """Each sample's random augmentation is seeded by (seed, epoch, index)."""

    def __init__(self, base, seed: int):
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % (2**63))
            return self.base[index]


class WithIndex(torch.utils.data.Dataset):
    """(*sample, index): lets a batch find its rows in per-sample caches (teacher logits)."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return (*self.base[index], index)


class BatchedEpoch:
    """The batches of a ``BatchedImages`` split; batch ``b``'s augmentation is drawn from a
    generator seeded by (seed, epoch, rank, b), so a resumed epoch continues bitwise."""

    def __init__(self, dataset, indices: torch.Tensor, batch_size: int, start_batch: int, key: tuple,
                 with_index: bool):  # fmt: skip
        self.dataset, self.indices, self.batch_size = dataset, indices, batch_size
        self.start_batch, self.key, self.with_index = start_batch, key, with_index

    def __len__(self) -> int:
        return len(self.indices) // self.batch_size - self.start_batch

    def __iter__(self):
        seed, epoch, rank = self.key
        for b in range(self.start_batch, len(self.indices) // self.batch_size):
            chosen = self.indices[b * self.batch_size : (b + 1) * self.batch_size]
            generator = torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_009 + rank) * 10_000_019 + b)
            images, labels = self.dataset.batch(chosen, generator)
            yield (images, labels, chosen) if self.with_index else (images, labels)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def epoch_loader(
    dataset: SeededAugment,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    batch_size: int,
    batches: int,
    start_batch: int = 0,
    workers: int = 0,
    with_index: bool = False,
    collate_fn=None,
) -> torch.utils.data.DataLoader:
    """This rank's ``batches`` batches of ``epoch``, from batch ``start_batch`` on (resume)."""
    order = epoch_order(len(dataset), seed, epoch)
    mine = order[rank::world][: batches * batch_size]
    if hasattr(dataset, "batch"):  # effnet.datasets.batched: whole batches, no loader processes
        return BatchedEpoch(dataset, mine, batch_size, start_batch, (seed, epoch, rank), with_index)
    dataset.epoch = epoch
    return torch.utils.data.DataLoader(
        WithIndex(dataset) if with_index else dataset,
        batch_size=batch_size,
        sampler=mine[start_batch * batch_size :].tolist(),
        num_workers=workers,
        drop_last=True,
        collate_fn=collate_fn,
        # Its own generator: otherwise creating the iterator draws a worker seed from the global
        # RNG, and a resumed run (iterator created mid-epoch) would shift dropout's random stream.
        generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch),
    )
