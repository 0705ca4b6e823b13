"""Balance and split: an optional cap per style, then a train/val split stratified by style.

Both draw by a hash of (seed, content), so they are the same on every run and machine and do not depend on the
order of the files. The split assigns whole groups: the images of a near-duplicate cluster that ingest keeps
together all land in one split, so no near-duplicate pair straddles train and val. A group whose images carry
different style labels counts towards the first of them in alphabetical order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T", bound=Any)  # a frozen dataclass with sha256, style, source and split fields (dataset.Item)


def rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def cap_per_style(items: Sequence[T], cap: int | None, seed: int) -> tuple[list[T], list[T]]:
    """(kept, dropped): at most `cap` items of each style, drawn by seed; all of them when cap is None."""
    if cap is None:
        return list(items), []
    kept: list[T] = []
    dropped: list[T] = []
    for style in sorted({item.style for item in items}):
        group = sorted((i for i in items if i.style == style), key=lambda i: rank(seed, i.sha256))
        kept += group[:cap]
        dropped += group[cap:]
    return kept, dropped


def split(
    items: Sequence[T],
    val_fraction: float,
    seed: int,
    groups: Mapping[str, str] | None = None,
    train_only: Collection[str] = (),
) -> list[T]:
    """Items with `split` set to "train" or "val", sorted by source.

    `groups` maps an item's sha256 to its group key (items without one are a group of their own). Per style,
    round(count * val_fraction) images go to validation (fewer when whole groups do not add up to it), and at
    least one image stays in training; the styles in `train_only` (the regularisation images) all train, and so
    does any group holding one of their images.
    """
    groups = groups or {}
    units: dict[str, list[T]] = {}
    for item in items:
        units.setdefault(groups.get(item.sha256, item.sha256), []).append(item)
    by_style: dict[str, list[str]] = {}
    for key, members in units.items():
        styles = {m.style for m in members}  # a group with a train-only image (near duplicates kept together) trains
        by_style.setdefault(min(styles & set(train_only) or styles), []).append(key)
    out: list[T] = []
    for style, keys in by_style.items():
        total = sum(len(units[key]) for key in keys)
        # Round half up, and keep at least one image of every style for training.
        budget = 0 if style in train_only else min(math.floor(total * val_fraction + 0.5), total - 1)
        for key in sorted(keys, key=lambda k: rank(seed, k)):
            to_val = len(units[key]) <= budget
            budget -= len(units[key]) if to_val else 0
            out += [dataclasses.replace(m, split="val" if to_val else "train") for m in units[key]]
    return sorted(out, key=lambda item: item.source)
