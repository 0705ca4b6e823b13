"""Caption variants: the captions an image trains with, made once here and cached with its views.

An image's captions are its first (what evaluation reads) and, with `ingest.captions: all`, its others. With
`shuffle_tags` or `tag_dropout`, each caption gives `caption_variants` variants: its comma-separated tags, the first
`keep_tokens` left in place, the rest shuffled and then each dropped with probability `tag_dropout` (kohya
sd-scripts' shuffle_caption, keep_tokens and caption_tag_dropout_rate, in its order), joined by ", ". Variant k of
caption c of an image is drawn from a generator seeded by (seed, image content hash, c, k) alone, so a rerun makes
the same strings and finds their states in the cache. Identical strings are one variant, encoded once.
"""

from __future__ import annotations

import torch

from artlora.config import AugmentConfig
from artlora.data.dataset import Item
from artlora.data.digests import digest


def changes_captions(config: AugmentConfig) -> bool:
    return config.shuffle_tags or config.tag_dropout > 0


def settings(config: AugmentConfig) -> dict:
    """The caption settings, for the index; empty at their defaults (so an index made without them is unchanged)."""
    if not changes_captions(config):
        return {}
    return config.model_dump(include={"shuffle_tags", "keep_tokens", "tag_dropout", "caption_variants"})


def tags(caption: str) -> list[str]:
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def variant(caption: str, gen: torch.Generator, keep_tokens: int, shuffle: bool, dropout: float) -> str:
    """One variant: the first `keep_tokens` tags as they are, the rest shuffled (if asked) then each kept with
    probability 1 - `dropout`."""
    parts = tags(caption)
    fixed, flex = parts[:keep_tokens], parts[keep_tokens:]
    if shuffle:
        flex = [flex[i] for i in torch.randperm(len(flex), generator=gen).tolist()]
    if dropout > 0:
        kept = torch.rand(len(flex), generator=gen) >= dropout
        flex = [tag for tag, keep in zip(flex, kept.tolist(), strict=True) if keep]
    return ", ".join(fixed + flex)


def caption_generator(seed: int, image_sha256: str, caption: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(digest("caption variant", seed, image_sha256, caption, index)[:15], 16))


def variants(item: Item, config: AugmentConfig) -> list[str]:
    """The distinct captions a training image's views are trained with, in a fixed order."""
    captions = [item.caption, *item.more_captions]
    if not changes_captions(config):
        return list(dict.fromkeys(captions))
    made = (
        variant(
            caption,
            caption_generator(config.seed, item.sha256, c, k),
            config.keep_tokens,
            config.shuffle_tags,
            config.tag_dropout,
        )
        for c, caption in enumerate(captions)
        for k in range(config.caption_variants)
    )
    return list(dict.fromkeys(made))
