"""Reading the latent cache that the augment stage writes: an index plus checksummed safetensors shards."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from safetensors.torch import load

from artlora import storage


class CorruptShardError(ValueError):
    """A shard whose bytes do not match the checksum in the index."""


@dataclass(frozen=True)
class LatentGroup:
    """Cached views that share one latent size (one aspect-ratio bucket), so they can share a batch."""

    latents: torch.Tensor  # [views, 4, h, w], already multiplied by the VAE scaling factor
    text: torch.Tensor  # [views, tokens, dim]: each view's caption states

    def __len__(self) -> int:
        return len(self.latents)


@dataclass(frozen=True)
class LatentSet:
    """Every cached view of one split, grouped by latent size, ready for training or evaluation."""

    groups: tuple[LatentGroup, ...]  # ordered by latent size
    empty_text: torch.Tensor  # [tokens, dim]: the empty caption, for caption dropout
    dataset_fingerprint: str

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups)

    def to(self, device: torch.device) -> LatentSet:
        groups = tuple(LatentGroup(g.latents.to(device), g.text.to(device)) for g in self.groups)
        return LatentSet(groups, self.empty_text.to(device), self.dataset_fingerprint)


def read_shard(store: storage.Storage, shard: dict[str, str]) -> dict[str, torch.Tensor]:
    """Load a shard (an index's {"uri", "sha256"}), refusing one whose bytes do not match."""
    data = store.get_bytes(shard["uri"])
    if hashlib.sha256(data).hexdigest() != shard["sha256"]:
        raise CorruptShardError(f"cache shard {shard['uri']} is corrupt (checksum mismatch); run augment again")
    return load(data)


def load_split(cache_uri: str, split: str, views: int | None = None) -> LatentSet:
    """The cached views of one split ("train" or "val"); `views` keeps only the first views of each image."""
    store = storage.get_storage()
    index = store.get_json(cache_uri)
    entries = [entry for entry in index["entries"] if entry["split"] == split]
    if not entries:
        raise ValueError(f"the latent cache {cache_uri} has no {split!r} images")
    with ThreadPoolExecutor(max_workers=16) as pool:  # many small GETs: latency-bound, so fetch in parallel
        latents = list(pool.map(lambda e: read_shard(store, e["latents"])["latents"][:views], entries))
        texts = {}
        for entry in entries:
            texts.setdefault(entry["text"]["uri"], entry["text"])
        hidden = dict(zip(texts, pool.map(lambda t: read_shard(store, t)["hidden"], texts.values()), strict=True))
    by_size: dict[tuple[int, ...], tuple[list, list]] = {}
    for entry, views in zip(entries, latents, strict=True):
        group_latents, group_text = by_size.setdefault(tuple(views.shape[1:]), ([], []))
        group_latents.append(views)
        group_text.extend([hidden[entry["text"]["uri"]]] * len(views))
    return LatentSet(
        groups=tuple(LatentGroup(torch.cat(lat), torch.stack(txt)) for _, (lat, txt) in sorted(by_size.items())),
        empty_text=read_shard(store, index["empty_text"])["hidden"],
        dataset_fingerprint=index["dataset_fingerprint"],
    )
