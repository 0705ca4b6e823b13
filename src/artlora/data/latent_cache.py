"""Reading the latent cache that the augment stage writes: an index plus checksummed safetensors shards.

The index (JSON, at the cache URI) lists one entry per image: its split, style, caption, bucket ([width, height]
in pixels), number of views, and two shards as {"uri", "sha256"}: its views' latents ([views, 4, h, w], already
multiplied by the VAE's scaling factor) and its caption's text-encoder states ([tokens, dim]). Every shard's bytes
are checked against the index's sha256 before they are used.

An index names the model family it was made for (`"architecture"`: a `diffusion.families` name; indexes without
it are SD 1.x/2.x's). Families with pooled embeddings (SDXL, SD 3.5, Flux) add, per caption shard, `pooled` [dim];
SDXL adds per entry `time_ids`: each view's [original h, original w, crop top, crop left, target h, target w].
"""

from __future__ import annotations

import hashlib
import logging

import torch
from safetensors.torch import load

from artlora.data.latents import LatentGroup, LatentSet
from artlora.data.shards import CorruptShardError
from artlora.errors import ArtloraError
from artlora.io import storage

log = logging.getLogger(__name__)


class CacheError(ArtloraError):
    """A latent cache without what a stage needs from it."""


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
        raise CacheError(
            f"the latent cache {cache_uri} has no {split!r} images (give ingest a val_fraction, or a cache with one)"
        )
    texts = {entry["text"]["uri"]: entry["text"] for entry in entries}
    # Many small GETs: latency-bound, so fetched in parallel.
    latents = storage.parallel(lambda e: read_shard(store, e["latents"])["latents"][:views], entries)
    text = dict(zip(texts, storage.parallel(lambda t: read_shard(store, t), texts.values()), strict=True))
    empty = read_shard(store, index["empty_text"])
    return LatentSet(
        groups=_groups(entries, latents, text),
        empty_text=empty["hidden"],
        dataset_fingerprint=index["dataset_fingerprint"],
        empty_pooled=empty.get("pooled"),
        architecture=index.get("architecture", "sd1"),
    )


def _groups(entries: list[dict], latents: list[torch.Tensor], text: dict[str, dict[str, torch.Tensor]]) -> tuple:
    """One LatentGroup per latent size, ordered by size; each view paired with its image's caption states (and
    its caption's pooled embedding and its own time ids, where the cache holds them)."""
    by_size: dict[tuple[int, ...], tuple[list, list, list, list, set, list, list]] = {}
    for entry, image_views in zip(entries, latents, strict=True):
        size = tuple(image_views.shape[1:])
        lat, txt, pooled, ids, buckets, captions, styles = by_size.setdefault(size, ([], [], [], [], set(), [], []))
        lat.append(image_views)
        shard = text[entry["text"]["uri"]]
        txt.extend([shard["hidden"]] * len(image_views))
        captions.extend([entry["caption"]] * len(image_views))
        styles.extend([entry.get("style", "")] * len(image_views))
        if "pooled" in shard:
            pooled.extend([shard["pooled"]] * len(image_views))
        if "time_ids" in entry:
            ids.extend(entry["time_ids"][: len(image_views)])
        buckets.add(tuple(entry["bucket"]) if "bucket" in entry else None)
    return tuple(
        LatentGroup(
            latents=torch.cat(lat),
            text=torch.stack(txt),
            bucket=buckets.pop() if len(buckets) == 1 else None,
            pooled=torch.stack(pooled) if pooled else None,
            time_ids=torch.tensor(ids, dtype=torch.float32) if ids else None,
            captions=tuple(captions),
            styles=tuple(styles),
        )
        for _, (lat, txt, pooled, ids, buckets, captions, styles) in sorted(by_size.items())
    )


def validation_data(cache_uri: str) -> LatentSet:
    """The validation split's first view per image; the training split if there is none (with a warning)."""
    try:
        return load_split(cache_uri, "val", views=1)
    except CacheError:
        log.warning("no validation images in %s: the held-out loss is measured on training images", cache_uri)
        return load_split(cache_uri, "train", views=1)
