"""Cache keys: everything a cached tensor depends on, hashed into the name it is stored under.

- a view's key: the image's content hash, the VAE's identity, the augmentation settings, the view index and the
  bucket; an image's latent shard is named by the keys of its views;
- a caption's key: the caption and the text encoder's identity (its weights and its tokenizer; both encoders and
  tokenizers for SDXL);
- the index's key: its whole content (the dataset version, the settings, every shard's name and checksum).
Change any input and the key changes, so a stale entry is never found; an unchanged input finds its entry again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

from artlora.config import AugmentConfig
from artlora.data.digests import digest
from artlora.diffusion import loading
from artlora.diffusion.architecture import is_sdxl

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


def text_identity(text_encoder: torch.nn.Module, tokenizer) -> str:
    """The encoder's weights and how captions are tokenized (vocabulary, merges, normalisation, length)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    # Padding and truncation are set per call; what they do is fixed by model_max_length below.
    spec.pop("padding", None)
    spec.pop("truncation", None)
    return digest("text", loading.module_fingerprint(text_encoder), spec, tokenizer.model_max_length)


def pipeline_text_identity(pipe) -> str:
    """The text identity of a pipeline: its one text encoder, or for SDXL both encoders with their tokenizers
    (and what is cached from them: both penultimate states concatenated, the second one's pooled output)."""
    if not is_sdxl(pipe):
        return text_identity(pipe.text_encoder, pipe.tokenizer)
    return digest(
        "sdxl-text",
        text_identity(pipe.text_encoder, pipe.tokenizer),
        text_identity(pipe.text_encoder_2, pipe.tokenizer_2),
        "penultimate(1)+penultimate(2), pooled(2)",
    )


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
