"""Cache keys: everything a cached tensor depends on, hashed into the name it is stored under.

- a view's key: the image's content hash, the VAE's identity, the augmentation settings, the view index and the
  bucket; an image's latent shard is named by the keys of its views;
- a caption's key: the caption and the text encoders' identity (their weights and tokenizers, as the model
  family defines it: `Family.text_identity`);
- the index's key: its whole content (the dataset version, the settings, every shard's name and checksum).
Change any input and the key changes, so a stale entry is never found; an unchanged input finds its entry again.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from artlora.config import AugmentConfig
from artlora.data.digests import digest
from artlora.diffusion import families, loading

# Bumped when the code that makes views or encodes them changes, so entries made by older code are not reused.
AUGMENT_VERSION = 2
# The fields of AugmentConfig that shape a view (the bucket, the image and the index are keyed separately).
VIEW_FIELDS = frozenset(
    {"seed", "crop_scale", "hflip", "rotation_degrees", "brightness", "contrast", "saturation", "hue"}
)


def view_settings(config: AugmentConfig) -> dict:
    """The settings that shape a view; batch size, experiment and the like do not and are left out."""
    return {"version": AUGMENT_VERSION, **config.model_dump(include=set(VIEW_FIELDS))}


def vae_identity(vae: torch.nn.Module) -> str:
    """The VAE's class, config (scaling factor included) and weights; latents are its posterior mean."""
    return digest("vae", loading.module_fingerprint(vae), "latent_dist.mean*scaling_factor")


def pipeline_text_identity(pipe, options: families.TextOptions | None = None) -> str:
    """The text identity of a pipeline, as its family defines it: every encoder with its tokenizer, and what is
    cached from them (with `options`, e.g. the T5 length)."""
    return families.of(pipe).text_identity(pipe, options or families.TextOptions())


def view_key(image_sha256: str, vae_id: str, settings: dict, index: int, bucket: Sequence[int]) -> str:
    return digest("view", image_sha256, vae_id, settings, index, list(bucket))


def latent_shard_key(view_keys: Sequence[str]) -> str:
    """One image's shard holds its views in order; its name follows from theirs."""
    return digest("latents", list(view_keys))


def image_shard_key(image_sha256: str, vae_id: str, settings: dict, views: int, bucket: Sequence[int]) -> str:
    return latent_shard_key([view_key(image_sha256, vae_id, settings, i, bucket) for i in range(views)])


def text_key(caption: str, text_id: str) -> str:
    return digest("caption", caption, text_id)


def index_key(index: dict) -> str:
    """An index is named by its whole content (dataset version, settings, every shard's URI and checksum)."""
    return digest("index", index)
