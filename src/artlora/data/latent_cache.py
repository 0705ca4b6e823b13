"""Reading the latent cache that the augment stage writes: an index plus checksummed safetensors shards.

The index (JSON, at the cache URI) lists one entry per image: its split, style, caption, bucket ([width, height]
in pixels), number of views, and two shards as {"uri", "sha256"}: its views' latents ([views, 4, h, w], already
multiplied by the VAE's scaling factor) and its caption's text-encoder states ([tokens, dim]). Every shard's bytes
are checked against the index's sha256 before they are used.

An index names the model family it was made for (`"architecture"`: a `diffusion.families` name; indexes without
it are SD 1.x/2.x's). Families with pooled embeddings (SDXL, SD 3.5, Flux) add, per caption shard, `pooled` [dim];
SDXL adds per entry `time_ids`: each view's [original h, original w, crop top, crop left, target h, target w].
A training entry may list `variants`, its caption variants as {"caption", "uri", "sha256"} (caption shards like
`text`'s), and `repeats` and `loss_weight` when they are not 1 (ingest.style_repeats, ingest.style_loss_weights).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection

import torch
from safetensors.torch import load

from artlora.contracts import REGULARISATION_STYLE
from artlora.data.latents import CaptionVariants, LatentGroup, LatentSet
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


def load_split(cache_uri: str, split: str, views: int | None = None, leave_out: Collection[str] = ()) -> LatentSet:
    """The cached views of one split ("train" or "val"); `views` keeps only the first views of each image;
    the images of the styles in `leave_out` are not read."""
    store = storage.get_storage()
    index = store.get_json(cache_uri)
    entries = [e for e in index["entries"] if e["split"] == split and e.get("style", "") not in leave_out]
    if not entries:
        raise CacheError(
            f"the latent cache {cache_uri} has no {split!r} images (give ingest a val_fraction, or a cache with one)"
        )
    texts = {shard["uri"]: shard for entry in entries for shard in [entry["text"], *entry.get("variants", [])]}
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
    by_size: dict[tuple[int, ...], list[tuple[dict, torch.Tensor]]] = {}
    for entry, image_views in zip(entries, latents, strict=True):
        by_size.setdefault(tuple(image_views.shape[1:]), []).append((entry, image_views))
    with_variants = any("variants" in entry for entry in entries)
    return tuple(_group(members, text, with_variants) for _, members in sorted(by_size.items()))


def _group(members: list[tuple[dict, torch.Tensor]], text: dict[str, dict[str, torch.Tensor]], variants: bool):
    txt, pooled, ids, captions, styles, buckets, repeats, weights = [], [], [], [], [], set(), [], []
    for entry, image_views in members:
        views = len(image_views)
        shard = text[entry["text"]["uri"]]
        txt.extend([shard["hidden"]] * views)
        captions.extend([entry["caption"]] * views)
        styles.extend([entry.get("style", "")] * views)
        repeats.extend([entry.get("repeats", 1)] * views)
        weights.extend([entry.get("loss_weight", 1.0)] * views)
        if "pooled" in shard:
            pooled.extend([shard["pooled"]] * views)
        if "time_ids" in entry:
            ids.extend(entry["time_ids"][:views])
        buckets.add(tuple(entry["bucket"]) if "bucket" in entry else None)
    return LatentGroup(
        latents=torch.cat([image_views for _, image_views in members]),
        text=torch.stack(txt),
        bucket=buckets.pop() if len(buckets) == 1 else None,
        pooled=torch.stack(pooled) if pooled else None,
        time_ids=torch.tensor(ids, dtype=torch.float32) if ids else None,
        captions=tuple(captions),
        styles=tuple(styles),
        variants=_variants(members, text) if variants else None,
        repeats=torch.tensor(repeats) if any(n != 1 for n in repeats) else None,
        loss_weights=torch.tensor(weights) if any(w != 1.0 for w in weights) else None,
    )


def _variants(members: list[tuple[dict, torch.Tensor]], text: dict[str, dict[str, torch.Tensor]]) -> CaptionVariants:
    """Each distinct variant's states once, and every view's choices among them (an entry without variants
    trains with its caption)."""
    table: dict[str, int] = {}  # shard URI -> index into the variant states
    per_view: list[list[int]] = []
    for entry, image_views in members:
        own = [table.setdefault(shard["uri"], len(table)) for shard in entry.get("variants", [entry["text"]])]
        per_view.extend([own] * len(image_views))
    width = max(len(own) for own in per_view)
    shards = [text[uri] for uri in table]
    captions = {shard["uri"]: shard["caption"] for entry, _ in members for shard in entry.get("variants", [])}
    captions |= {entry["text"]["uri"]: entry["caption"] for entry, _ in members if "variants" not in entry}
    return CaptionVariants(
        text=torch.stack([shard["hidden"] for shard in shards]),
        pooled=torch.stack([shard["pooled"] for shard in shards]) if "pooled" in shards[0] else None,
        captions=tuple(captions[uri] for uri in table),
        choices=torch.tensor([own + [own[0]] * (width - len(own)) for own in per_view]),
        counts=torch.tensor([len(own) for own in per_view]),
    )


def validation_data(cache_uri: str) -> LatentSet:
    """The validation split's first view per image; the training split if there is none (with a warning), less
    the regularisation images (they are no style's)."""
    try:
        return load_split(cache_uri, "val", views=1)
    except CacheError:
        log.warning("no validation images in %s: the held-out loss is measured on training images", cache_uri)
        return load_split(cache_uri, "train", views=1, leave_out={REGULARISATION_STYLE})
