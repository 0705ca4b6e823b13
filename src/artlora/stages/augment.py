"""Augment and cache: augmented views of every curated image, encoded once to VAE latents.

The cache is content-addressed in the object store under `<storage_root>/cache/`:
- `latents/<key>.safetensors`: the views of one image; the key hashes the image's content, the VAE's identity
  and the augmentation settings, so an edited image, another VAE or other settings never hit a stale entry;
- `text/<key>.safetensors`: one caption's text-encoder states; the key hashes the caption and the encoder;
- `index/<key>.json`: the dataset's entries (split, style, shard URIs and checksums); its URI is the stage's
  output and the train stage's input.
A shard is one PUT, so it is whole or absent; a rerun on unchanged inputs finds every shard and encodes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass

import torch
from PIL import Image, ImageOps
from safetensors.torch import save
from torchvision.transforms import v2
from tqdm import tqdm

from artlora import models, storage, tracking
from artlora.config import AugmentConfig
from artlora.stages.ingest import Item, load_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentResult:
    cache_uri: str
    images: int
    encoded_views: int
    reused_views: int


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def augmentation_settings(config: AugmentConfig) -> dict:
    """The settings that shape a view: part of every latent key."""
    return config.model_dump(
        include={"resolution", "views_per_image", "hflip", "rotation_degrees", "color_jitter", "seed"}
    )


def view_transform(config: AugmentConfig) -> v2.Compose:
    """Resize, rotate a little, crop away the rotated corners, flip, jitter colours; output in [-1, 1]."""
    # A square rotated by a degrees needs cos(a) + sin(a) times the side to keep its corners filled.
    angle = math.radians(config.rotation_degrees)
    side = math.ceil(config.resolution * (math.cos(angle) + math.sin(angle)))
    steps = [v2.ToImage(), v2.Resize(side, antialias=True)]
    if config.rotation_degrees:
        steps.append(v2.RandomRotation(config.rotation_degrees))
    steps.append(v2.CenterCrop(config.resolution) if config.rotation_degrees else v2.RandomCrop(config.resolution))
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if config.color_jitter:
        j = config.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 5))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])]
    return v2.Compose(steps)


def make_views(image: Image.Image, item: Item, config: AugmentConfig, transform: v2.Compose) -> torch.Tensor:
    """K views of one image, each seeded by (seed, content, index) so any view can be made again alone."""
    views = []
    for index in range(config.views_per_image):
        torch.manual_seed(int(digest(config.seed, item.sha256, index)[:15], 16))
        views.append(transform(image))
    return torch.stack(views)


@torch.no_grad()
def encode_text(pipe, captions: list[str]) -> torch.Tensor:
    tokens = pipe.tokenizer(
        captions, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return pipe.text_encoder(tokens.input_ids)[0]


def run(config: AugmentConfig) -> AugmentResult:
    config.require("dataset_uri")
    store = storage.get_storage()
    items = load_manifest(config.dataset_uri)
    pipe = models.load_pipeline(config.base_model)
    vae_id = models.module_fingerprint(pipe.vae)
    # A caption's states depend on how it is tokenized as well as on the encoder's weights.
    text_id = digest(
        models.module_fingerprint(pipe.text_encoder),
        sorted(pipe.tokenizer.get_vocab().items()),
        pipe.tokenizer.model_max_length,
    )
    settings = augmentation_settings(config)
    cache = storage.join(config.storage_root, "cache")
    dataset_fp = config.dataset_uri.rstrip("/").rsplit("/", 1)[-1]
    with tracking.stage_run("augment", config, tags={"artlora.dataset_fingerprint": dataset_fp}):
        latents = {
            item.sha256: storage.join(cache, "latents", f"{digest(item.sha256, vae_id, settings)}.safetensors")
            for item in items
        }
        checksums = {sha: (store.head(uri) or {}).get("sha256") for sha, uri in latents.items()}
        todo = [item for item in items if not checksums[item.sha256]]
        checksums.update(encode_images(pipe, todo, config, store, latents))
        texts = encode_captions(pipe, store, cache, text_id, [item.caption for item in items])
        index = {
            "dataset_fingerprint": dataset_fp,
            "augmentation": settings,
            "entries": [index_entry(item, latents[item.sha256], checksums[item.sha256], texts) for item in items],
            "empty_text": texts[""],
        }
        cache_uri = storage.join(cache, "index", f"{digest(dataset_fp, vae_id, text_id, settings)}.json")
        store.put_json(cache_uri, index)
        encoded = len(todo) * config.views_per_image
        reused = (len(items) - len(todo)) * config.views_per_image
        tracking.log_metrics({"encoded_views": encoded, "reused_views": reused, "images": len(items)})
    log.info("latent cache %s: %d views encoded, %d reused", cache_uri, encoded, reused)
    return AugmentResult(cache_uri, len(items), encoded, reused)


def put_shard(store: storage.Storage, uri: str, tensors: dict[str, torch.Tensor]) -> str:
    """Store a safetensors shard with its checksum as object metadata (read back by HEAD); returns it."""
    data = save({k: v.contiguous() for k, v in tensors.items()})
    checksum = hashlib.sha256(data).hexdigest()
    store.put_bytes(uri, data, metadata={"sha256": checksum})
    return checksum


@torch.no_grad()
def encode_images(pipe, items: list[Item], config: AugmentConfig, store, latents: dict[str, str]) -> dict[str, str]:
    """Encode the views of `items` in batches and store one shard per image; returns shard checksums."""
    transform = view_transform(config)
    per_batch = max(1, config.batch_size // config.views_per_image)
    checksums: dict[str, str] = {}
    progress = tqdm(total=len(items) * config.views_per_image, desc="encode", unit="view", mininterval=1.0)
    for start in range(0, len(items), per_batch):
        batch = items[start : start + per_batch]
        views = [make_views(_open_rgb(store.get_bytes(item.file)), item, config, transform) for item in batch]
        encoded = pipe.vae.encode(torch.cat(views)).latent_dist.mean * pipe.vae.config.scaling_factor
        for item, item_latents in zip(batch, encoded.split(config.views_per_image), strict=True):
            checksums[item.sha256] = put_shard(store, latents[item.sha256], {"latents": item_latents})
        progress.update(len(batch) * config.views_per_image)
    progress.close()
    return checksums


def encode_captions(pipe, store, cache: str, text_id: str, captions: list[str]) -> dict[str, dict[str, str]]:
    """Text-encoder states per distinct caption, plus the empty caption (for caption dropout)."""
    out = {}
    for caption in sorted(set(captions) | {""}):
        uri = storage.join(cache, "text", f"{digest(caption, text_id)}.safetensors")
        checksum = (store.head(uri) or {}).get("sha256")
        if not checksum:
            checksum = put_shard(store, uri, {"hidden": encode_text(pipe, [caption])[0]})
        out[caption] = {"uri": uri, "sha256": checksum}
    return out


def index_entry(item: Item, latents_uri: str, checksum: str, texts: dict[str, dict[str, str]]) -> dict:
    return {
        "id": item.sha256,
        "split": item.split,
        "style": item.style,
        "caption": item.caption,
        "latents": {"uri": latents_uri, "sha256": checksum},
        "text": texts[item.caption],
    }


def _open_rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        # Phone photos and scans store their rotation in EXIF: train on the image as people see it.
        return ImageOps.exif_transpose(image).convert("RGB")
