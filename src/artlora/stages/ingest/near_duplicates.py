"""Near-duplicate clusters: images whose 64-bit perceptual hashes differ in at most `max_distance` bits.

Clusters are the connected components of the "within distance" relation, so a chain of small edits (a crop of a
resize of a scan) ends up in one cluster even when its two ends are further apart. Pairs are found by comparing
every hash with every other, a block of rows at a time with numpy: a few thousand images take milliseconds, and
memory stays at one block whatever the count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Hash comparisons held in memory at once (8 bytes each).
_BLOCK = 1 << 22


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def clusters(hashes: Sequence[str], max_distance: int) -> list[list[int]]:
    """Groups of two or more indices into `hashes` (hex strings), each sorted, in order of their first index."""
    if len(hashes) < 2:
        return []
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    parent = list(range(len(values)))
    rows = max(1, _BLOCK // len(values))
    for start in range(0, len(values), rows):
        block = values[start : start + rows]
        distances = np.bitwise_count(block[:, None] ^ values[None, :])
        for i, j in zip(*np.nonzero(distances <= max_distance), strict=True):
            if start + i < j:
                _union(parent, start + int(i), int(j))
    groups: dict[int, list[int]] = {}
    for index in range(len(values)):
        groups.setdefault(_root(parent, index), []).append(index)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving keeps the trees flat
        i = parent[i]
    return i


def _union(parent: list[int], a: int, b: int) -> None:
    ra, rb = _root(parent, a), _root(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)
