"""Which views each micro-batch of a run takes, and the seeds of its randomness: all derived from (seed, index)
alone, so any step's batch is known without replaying the steps before it (what makes a resumed run equal to an
uninterrupted one). Every batch is drawn from one latent group (bucket), so its views share a size.

With repeats (ingest.style_repeats), a view with n repeats is n of an epoch's places, each drawn like any other
(kohya sd-scripts' num_repeats): a style repeated n times is drawn n times as often per image."""

from __future__ import annotations

import torch

Repeats = list[torch.Tensor | None] | None  # per group, each view's repeats per epoch (None: once each)


def effective_sizes(sizes: list[int], repeats: Repeats = None) -> list[int]:
    """Places per epoch in each group: its views, each counted as often as it repeats."""
    counts = repeats or [None] * len(sizes)
    return [size if r is None else int(r.sum()) for size, r in zip(sizes, counts, strict=True)]


def epoch_batches(
    sizes: list[int], batch_size: int, seed: int, epoch: int, repeats: Repeats = None
) -> list[tuple[int, torch.Tensor]]:
    """One epoch's batches as (group, indices): every view once (or its repeats' number of times), each batch
    from a single group (bucket).

    Views are shuffled within each group and the batches across groups, seeded by (seed, epoch), so the batch
    of any step is known without replaying the steps before it. A group's last batch may be smaller.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    batches = []
    for group, size in enumerate(sizes):
        counts = repeats[group] if repeats else None
        order = torch.randperm(size if counts is None else int(counts.sum()), generator=gen)
        if counts is not None:
            order = torch.arange(size).repeat_interleave(counts)[order]
        batches += [(group, chunk) for chunk in order.split(batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def sampler_position(sizes: list[int], batch_size: int, index: int) -> tuple[int, int]:
    """(epoch, batch within the epoch) of micro-batch `index`; `sizes` are the groups' places per epoch
    (`effective_sizes`)."""
    return divmod(index, sum(-(-size // batch_size) for size in sizes))


def batch_for_step(
    sizes: list[int], batch_size: int, seed: int, step: int, repeats: Repeats = None
) -> tuple[int, torch.Tensor]:
    epoch, position = sampler_position(effective_sizes(sizes, repeats), batch_size, step)
    return epoch_batches(sizes, batch_size, seed, epoch, repeats)[position]


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 1)


def seed_for_dropout(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


def caption_draws(seed: int, index: int, rows: int) -> torch.Tensor:
    """Uniform draws in [0, 1) choosing micro-batch `index`'s caption variants, from their own generator, so
    turning variants on changes no other draw of the step."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + index) % (2**63) ^ 0x5EED_CA97)
    return torch.rand(rows, generator=gen)
