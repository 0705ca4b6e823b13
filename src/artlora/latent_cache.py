"""Reading the latent cache that the augment stage writes: an index plus checksummed safetensors shards.

The index (JSON, at the cache URI) lists one entry per image: its split, style, caption, bucket ([width, height]
in pixels), number of views, and two shards as {"uri", "sha256"}: its views' latents ([views, 4, h, w], already
multiplied by the VAE's scaling factor) and its caption's text-encoder states ([tokens, dim]). Every shard's bytes
are checked against the index's sha256 before they are used.

SDXL caches (`"architecture": "sdxl"`) add, per caption shard, the pooled embedding `pooled` [dim], and per entry
`time_ids`: each view's [original h, original w, crop top, crop left, target h, target w].
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import torch
from safetensors.torch import load

from artlora import storage
from artlora.shards import PARALLEL, CorruptShardError

__all__ = ["CorruptShardError", "LatentGroup", "LatentSet", "load_split", "read_shard"]


@dataclass(frozen=True)
class LatentGroup:
    """Cached views that share one latent size (one aspect-ratio bucket), so they can share a batch."""

    latents: torch.Tensor  # [views, 4, h, w], already multiplied by the VAE scaling factor
    text: torch.Tensor  # [views, tokens, dim]: each view's caption states
    bucket: tuple[int, int] | None = None  # (width, height) of the views in pixels; None in older indexes
    pooled: torch.Tensor | None = None  # SDXL: [views, dim], each view's caption's pooled embedding
    time_ids: torch.Tensor | None = None  # SDXL: [views, 6], each view's size and crop conditioning
    captions: tuple[str, ...] = ()  # each view's caption (what `text` encodes)

    def __len__(self) -> int:
        return len(self.latents)


@dataclass(frozen=True)
class LatentSet:
    """Every cached view of one split, grouped by latent size, ready for training or evaluation."""

    groups: tuple[LatentGroup, ...]  # ordered by latent size
    empty_text: torch.Tensor  # [tokens, dim]: the empty caption, for caption dropout
    dataset_fingerprint: str
    empty_pooled: torch.Tensor | None = None  # SDXL: [dim], the empty caption's pooled embedding

    @property
    def sdxl(self) -> bool:
        return self.empty_pooled is not None

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups)

    def to(self, device: torch.device) -> LatentSet:
        groups = tuple(
            replace(
                g,
                latents=g.latents.to(device),
                text=g.text.to(device),
                pooled=_to(g.pooled, device),
                time_ids=_to(g.time_ids, device),
            )
            for g in self.groups
        )
        return replace(
            self, groups=groups, empty_text=self.empty_text.to(device), empty_pooled=_to(self.empty_pooled, device)
        )

    def reencoded(self, encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor | None]]) -> LatentSet:
        """The same views with their caption states (and SDXL pooled embeddings) computed again by `encode`
        (captions -> (hidden, pooled)): how a text encoder with a trained adapter reads the captions."""
        groups = []
        for group in self.groups:
            hidden, pooled = encode(list(group.captions))
            groups.append(replace(group, text=hidden, pooled=pooled))
        empty_hidden, empty_pooled = encode([""])
        return replace(
            self,
            groups=tuple(groups),
            empty_text=empty_hidden[0],
            empty_pooled=None if empty_pooled is None else empty_pooled[0],
        )


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


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
    texts = {entry["text"]["uri"]: entry["text"] for entry in entries}
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:  # many small GETs: latency-bound, so fetch in parallel
        latents = list(pool.map(lambda e: read_shard(store, e["latents"])["latents"][:views], entries))
        text = dict(zip(texts, pool.map(lambda t: read_shard(store, t), texts.values()), strict=True))
    empty = read_shard(store, index["empty_text"])
    return LatentSet(
        groups=_groups(entries, latents, text, sdxl=index.get("architecture") == "sdxl"),
        empty_text=empty["hidden"],
        dataset_fingerprint=index["dataset_fingerprint"],
        empty_pooled=empty["pooled"] if index.get("architecture") == "sdxl" else None,
    )


def _groups(
    entries: list[dict], latents: list[torch.Tensor], text: dict[str, dict[str, torch.Tensor]], sdxl: bool = False
) -> tuple:
    """One LatentGroup per latent size, ordered by size; each view paired with its image's caption states (and
    for SDXL its caption's pooled embedding and its own time ids)."""
    by_size: dict[tuple[int, ...], tuple[list, list, list, list, set, list]] = {}
    for entry, image_views in zip(entries, latents, strict=True):
        size = tuple(image_views.shape[1:])
        lat, txt, pooled, ids, buckets, captions = by_size.setdefault(size, ([], [], [], [], set(), []))
        lat.append(image_views)
        shard = text[entry["text"]["uri"]]
        txt.extend([shard["hidden"]] * len(image_views))
        captions.extend([entry["caption"]] * len(image_views))
        if sdxl:
            pooled.extend([shard["pooled"]] * len(image_views))
            ids.extend(entry["time_ids"][: len(image_views)])
        buckets.add(tuple(entry["bucket"]) if "bucket" in entry else None)
    return tuple(
        LatentGroup(
            torch.cat(lat),
            torch.stack(txt),
            buckets.pop() if len(buckets) == 1 else None,
            torch.stack(pooled) if sdxl else None,
            torch.tensor(ids, dtype=torch.float32) if sdxl else None,
            tuple(captions),
        )
        for _, (lat, txt, pooled, ids, buckets, captions) in sorted(by_size.items())
    )
