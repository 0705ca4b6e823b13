"""Augment and cache: augmented views of every curated image, encoded once to VAE latents.

The cache is content-addressed in the object store under `<storage_root>/cache/` (keys: `cache_keys.py`):
- `latents/<key>.safetensors`: the views of one image at its bucket's size, [views, 4, h, w]; the key follows
  from its views' keys (image content, VAE identity, augmentation settings, view index, bucket);
- `text/<key>.safetensors`: one caption's text-encoder states, `hidden` [tokens, dim] (and `pooled` [dim] for the
  families that have one), as the model family encodes a caption (`Family.text_encoders`); the key hashes the
  caption and the family's text identity (every encoder and tokenizer); the empty caption is always there, for
  caption dropout; the training images' caption variants (`caption_variants.py`) are cached the same way, each
  distinct string once;
- `index/<hash>.json`: the dataset's entries (split, style, caption, bucket, shard URIs and checksums), named by
  the hash of its content (besides SD 1.x/2.x, the family's name as `"architecture"`; for SDXL per entry each
  view's size/crop time ids); its
  URI is the stage's output and the train stage's input (`artlora.data.latent_cache`).
Every stored shard is downloaded and checked (`artlora.data.shards`) before it is reused; a damaged or partial one is
encoded again. A rerun on unchanged inputs therefore encodes nothing and reads each shard once. Two runs at once
are safe: a key keeps the first shard stored under it, and the index takes each new shard's checksum from what
is stored (`shards.stored_checksums`). Memory stays flat in the number of images: images are decoded a few ahead
of the VAE and at most `2 x storage.PARALLEL` encoded shards wait for their upload.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import torch
from tqdm import tqdm

from artlora import contracts
from artlora.config import AugmentConfig
from artlora.data import dataset, shards
from artlora.data.dataset import Item
from artlora.data.images import open_rgb
from artlora.diffusion import families, loading, model_sources
from artlora.diffusion.device import default_device
from artlora.diffusion.vae import encode_latents
from artlora.io import runs, storage, tracking
from artlora.stages.augment import cache_keys, caption_variants
from artlora.stages.augment.views import Bucket, item_bucket, make_views, time_ids

log = logging.getLogger(__name__)

INDEX_FORMAT = 2
# Images decoded and augmented at once, ahead of the VAE.
LOADERS = 4


@dataclass(frozen=True)
class AugmentResult:
    cache_uri: str
    images: int
    encoded_views: int
    reused_views: int
    rebuilt_shards: int = 0  # stored shards that failed their check and were made again
    encoded_captions: int = 0


@dataclass(frozen=True)
class Planned:
    """One image's place in the cache."""

    item: Item
    bucket: Bucket
    background: tuple[int, int, int]  # what transparent pixels are composited on, as ingest measured them
    key: str
    uri: str


@dataclass(frozen=True)
class Built:
    """Shards of one kind after a run: checksums by key, and how many were encoded and rebuilt."""

    checksums: dict[str, str]
    encoded: int
    rebuilt: int


def run(config: AugmentConfig) -> AugmentResult:
    config.require("dataset_uri")
    # Before any work: a bad base model or a tracking store that does not answer fails at once.
    model_sources.check_reference(config.base_model)
    tracking.check()
    store = storage.get_storage()
    dataset_uri = config.given("dataset_uri")
    items, background = dataset.load_items(dataset_uri), dataset.load_background(dataset_uri)
    pipe = loading.load_pipeline(config.base_model, text=text_options(config))
    vae_id = cache_keys.vae_identity(pipe.vae)
    text_id = cache_keys.pipeline_text_identity(pipe, text_options(config))
    cache = storage.join(config.storage_root, "cache")
    dataset_fp = dataset.fingerprint_of(dataset_uri)
    with runs.stage_run("augment", config, tags={contracts.DATASET_FINGERPRINT_TAG: dataset_fp}):
        planned = plan(items, background, config, vae_id, cache)
        latents = build_latents(pipe, planned, config, store)
        variants = {item.sha256: caption_variants.variants(item, config) for item in items if item.split == "train"}
        captions = [item.caption for item in items] + [text for texts in variants.values() for text in texts]
        texts, text_built = build_texts(pipe, store, cache, text_id, captions, config)
        identities = {"vae": vae_id, "text": text_id}
        index = make_index(config, dataset_fp, identities, planned, latents, texts, families.of(pipe), variants)
        cache_uri = storage.join(cache, "index", f"{cache_keys.index_key(index)}.json")
        store.put_json(cache_uri, index)
        views = config.views_per_image
        result = AugmentResult(
            cache_uri,
            images=len(items),
            encoded_views=latents.encoded * views,
            reused_views=(len(planned) - latents.encoded) * views,
            rebuilt_shards=latents.rebuilt + text_built.rebuilt,
            encoded_captions=text_built.encoded,
        )
        runs.log_metrics({name: value for name, value in vars(result).items() if isinstance(value, int)})
    log.info(
        "latent cache %s: %d views encoded, %d reused, %d captions encoded, %d corrupt shards rebuilt",
        cache_uri,
        result.encoded_views,
        result.reused_views,
        result.encoded_captions,
        result.rebuilt_shards,
    )
    return result


def plan(items: list[Item], background: tuple, config: AugmentConfig, vae_id: str, cache: str) -> list[Planned]:
    # The background changes the pixels of transparent images, so it shapes their views like a setting does.
    settings = {**cache_keys.view_settings(config), "background": list(background)}
    out = []
    for item in items:
        bucket = item_bucket(item, config.resolution)
        key = cache_keys.image_shard_key(item.sha256, vae_id, settings, config.views_per_image, bucket)
        uri = storage.join(cache, "latents", f"{key}.safetensors")
        out.append(Planned(item, bucket, tuple(background), key, uri))
    return out


# -- latents --------------------------------------------------------------------------------------------


def build_latents(pipe, planned: list[Planned], config: AugmentConfig, store: storage.Storage) -> Built:
    """Reuse every stored shard that passes its check; encode the rest. Checksums are of the stored shards."""
    verified = shards.verify(store, {p.key: p.uri for p in planned}, ("latents",))
    todo = list({p.key: p for p in planned if p.key not in verified.whole}.values())
    encode_images(pipe, todo, config, store, set(verified.corrupt))
    checksums = {**verified.whole, **shards.stored_checksums(store, {p.key: p.uri for p in todo})}
    return Built(checksums, encoded=len(todo), rebuilt=len(verified.corrupt))


def encode_images(pipe, todo: list[Planned], config: AugmentConfig, store: storage.Storage, corrupt: set[str]) -> None:
    """Encode the views of `todo`, one bucket at a time, and store one shard per image (replacing the `corrupt`
    keys' shards; keeping any other that a concurrent run stored first)."""
    vae = pipe.vae.to(default_device())
    views = config.views_per_image
    ahead = 2 * -(-config.batch_size // views) + LOADERS
    progress = tqdm(total=len(todo) * views, desc="encode", unit="view", mininterval=1.0)
    with ThreadPoolExecutor(LOADERS) as loaders, storage.Background() as uploads:
        for group in by_bucket(todo).values():
            made = prefetch(loaders, lambda p: load_views(store, p, config), group, ahead)
            for p, latents in encode_bucket(vae, group, made, config.batch_size, views):
                uploads.submit(p.key, shards.put, store, p.uri, p.key, latents, p.key in corrupt)
                progress.update(views)
    progress.close()


def by_bucket(planned: list[Planned]) -> dict[Bucket, list[Planned]]:
    groups: dict[Bucket, list[Planned]] = {}
    for p in planned:
        groups.setdefault(p.bucket, []).append(p)
    return dict(sorted(groups.items()))


def load_views(store: storage.Storage, planned: Planned, config: AugmentConfig) -> torch.Tensor:
    # Decoded exactly as ingest measured it (first frame, EXIF orientation, colour mode, transparency).
    image = open_rgb(store.get_bytes(planned.item.file), planned.background)
    return make_views(image, planned.item.sha256, config, planned.bucket)


def prefetch(pool: Executor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """`fn` over `items` in order, run in `pool` with at most `ahead` calls in flight (bounded memory); calls not
    started yet are cancelled when the caller stops early (an error)."""
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def encode_bucket(
    vae, planned: list[Planned], made: Iterable[torch.Tensor], batch_size: int, views: int
) -> Iterator[tuple[Planned, dict[str, torch.Tensor]]]:
    """Encode the views of images sharing one bucket, `batch_size` views per VAE call; yields each image's
    shard tensors as soon as all its views are encoded."""
    waiting: deque[Planned] = deque()  # images with views in `buffer` or `done`, in order
    buffer: list[torch.Tensor] = []  # views not encoded yet
    done: list[torch.Tensor] = []  # latents not handed out yet
    for p, image_views in zip(planned, made, strict=True):
        waiting.append(p)
        buffer.extend(image_views)
        while len(buffer) >= batch_size:
            done += encode(vae, buffer[:batch_size], batch_size)
            del buffer[:batch_size]
            while len(done) >= views:
                yield waiting.popleft(), {"latents": torch.stack(done[:views])}
                del done[:views]
    if buffer:
        done += encode(vae, buffer, batch_size)
    while waiting:
        yield waiting.popleft(), {"latents": torch.stack(done[:views])}
        del done[:views]


@torch.no_grad()
def encode(vae, views: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Latents (the posterior mean, shifted and scaled: `diffusion.vae`) of one batch of views.

    The batch is filled up to `batch_size` with blank views, whose latents are dropped: the VAE's arithmetic
    differs in the last bits with the batch size (measured on CPU: alone vs in a batch of 16), not with which
    views share a batch. So a view's latent is the same bit for bit however the views were grouped, and a rerun
    that encodes only what an interrupted run left out makes exactly the cache an undisturbed run makes."""
    batch = torch.stack(views)
    if len(views) < batch_size:
        batch = torch.cat([batch, batch.new_zeros((batch_size - len(views), *batch.shape[1:]))])
    latents = encode_latents(vae, batch.to(vae.device, vae.dtype))
    return list(latents[: len(views)].float().cpu().unbind())


# -- captions -------------------------------------------------------------------------------------------


def build_texts(
    pipe, store: storage.Storage, cache: str, text_id: str, captions: list[str], config: AugmentConfig
) -> tuple[dict[str, dict[str, str]], Built]:
    """Text-encoder states per distinct caption, plus the empty caption: {caption: {"uri", "sha256"}}."""
    wanted = sorted(set(captions) | {""})
    keys = {caption: cache_keys.text_key(caption, text_id) for caption in wanted}
    uris = {key: storage.join(cache, "text", f"{key}.safetensors") for key in keys.values()}
    names = families.of(pipe).cached_text
    verified = shards.verify(store, uris, names)
    todo = [caption for caption in wanted if keys[caption] not in verified.whole]
    with storage.Background() as uploads:
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start : start + config.batch_size]
            for caption, tensors in zip(chunk, encode_text(pipe, chunk, config), strict=True):
                key = keys[caption]
                uploads.submit(key, shards.put, store, uris[key], key, tensors, key in verified.corrupt)
    checksums = {**verified.whole, **shards.stored_checksums(store, {keys[c]: uris[keys[c]] for c in todo})}
    texts = {caption: {"uri": uris[keys[caption]], "sha256": checksums[keys[caption]]} for caption in wanted}
    return texts, Built(checksums, encoded=len(todo), rebuilt=len(verified.corrupt))


def text_options(config: AugmentConfig) -> families.TextOptions:
    # No denoiser: augment makes latents and caption states only.
    return families.TextOptions(max_t5_length=config.max_t5_length, t5=config.t5, denoiser=False)


def encode_text(pipe, captions: list[str], config: AugmentConfig) -> list[dict[str, torch.Tensor]]:
    """Per caption, the text encoder states `hidden` [tokens, dim] (and `pooled` [dim]) to cache."""
    encoders = families.of(pipe).text_encoders(pipe, text_options(config))
    for encoder in encoders.encoders:
        if encoder is not None:
            encoder.to(default_device())
    return encoders.states(captions)


# -- the index ------------------------------------------------------------------------------------------


def make_index(
    config: AugmentConfig,
    dataset_fp: str,
    identities: dict[str, str],
    planned: list[Planned],
    latents: Built,
    texts: dict[str, dict[str, str]],
    family: families.Family,
    variants: dict[str, list[str]] | None = None,
) -> dict:
    """The index: what the cache was made from, and one entry per image (layout: artlora.data.latent_cache);
    `variants` are the training images' caption variants, by content hash."""
    buckets = Counter(f"{w}x{h}" for w, h in (p.bucket for p in planned))
    entries = [
        index_entry(p, latents.checksums[p.key], texts, config, (variants or {}).get(p.item.sha256)) for p in planned
    ]
    if family.time_ids:
        for p, entry in zip(planned, entries, strict=True):
            entry["time_ids"] = time_ids((p.item.width, p.item.height), p.item.sha256, config, p.bucket)
    index = {
        "format": INDEX_FORMAT,
        "dataset_fingerprint": dataset_fp,
        "dataset_uri": config.dataset_uri,
        "base_model": config.base_model,
        "identities": identities,
        "augmentation": {
            **cache_keys.view_settings(config),
            "views_per_image": config.views_per_image,
            "resolution": config.resolution,
            "background": list(planned[0].background),
            **caption_variants.settings(config),
        },
        "buckets": dict(sorted(buckets.items())),
        "entries": entries,
        "empty_text": texts[""],
    }
    return {**family.index_fields(), **index}


def index_entry(
    planned: Planned, checksum: str, texts: dict[str, dict[str, str]], config: AugmentConfig, variants: list | None
) -> dict:
    """One image's entry; `variants` (its caption variants) are listed when they are other than its caption, and
    its repeats and loss weight when they are not 1 (so an index made without them is unchanged)."""
    item = planned.item
    entry = {
        "id": item.sha256,
        "split": item.split,
        "style": item.style,
        "caption": item.caption,
        "bucket": list(planned.bucket),
        "views": config.views_per_image,
        "latents": {"uri": planned.uri, "sha256": checksum},
        "text": texts[item.caption],
    }
    if variants and variants != [item.caption]:
        entry["variants"] = [{"caption": text, **texts[text]} for text in variants]
    if item.repeats != 1:
        entry["repeats"] = item.repeats
    if item.loss_weight != 1.0:
        entry["loss_weight"] = item.loss_weight
    return entry
