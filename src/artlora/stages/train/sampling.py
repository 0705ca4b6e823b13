"""Which views each micro-batch of a run takes, and the seeds of its randomness: all derived from (seed, index)
alone, so any step's batch is known without replaying the steps before it (what makes a resumed run equal to an
uninterrupted one). Every batch is drawn from one latent group (bucket), so its views share a size."""

from __future__ import annotations

import torch


def epoch_batches(sizes: list[int], batch_size: int, seed: int, epoch: int) -> list[tuple[int, torch.Tensor]]:
    """One epoch's batches as (group, indices): every view once, each batch from a single group (bucket).

    Views are shuffled within each group and the batches across groups, seeded by (seed, epoch), so the batch
    of any step is known without replaying the steps before it. A group's last batch may be smaller.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    batches = [
        (group, chunk)
        for group, size in enumerate(sizes)
        for chunk in torch.randperm(size, generator=gen).split(batch_size)
    ]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def sampler_position(sizes: list[int], batch_size: int, index: int) -> tuple[int, int]:
    """(epoch, batch within the epoch) of micro-batch `index`."""
    return divmod(index, sum(-(-size // batch_size) for size in sizes))


def batch_for_step(sizes: list[int], batch_size: int, seed: int, step: int) -> tuple[int, torch.Tensor]:
    epoch, position = sampler_position(sizes, batch_size, step)
    return epoch_batches(sizes, batch_size, seed, epoch)[position]


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 1)


def seed_for_dropout(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)
