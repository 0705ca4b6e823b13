"""Cached views in memory, grouped by latent size: what train and evaluate read the latent cache into.

Only torch here (no storage), so the training step can be benchmarked on a machine without an object store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True, kw_only=True)
class CaptionVariants:
    """The caption variants a group's views train with: each distinct variant's states once, and per view which
    of them are its own (training draws one per view and step)."""

    text: torch.Tensor  # [variants, tokens, dim]
    pooled: torch.Tensor | None  # [variants, dim] for the families with a pooled embedding
    captions: tuple[str, ...]  # what `text` encodes, per variant
    choices: torch.Tensor  # [views, most variants of a view] long: indices into `text`, padded with the first
    counts: torch.Tensor  # [views] long: how many of a view's `choices` are real

    def to(self, device: torch.device) -> CaptionVariants:
        return replace(
            self,
            text=self.text.to(device),
            pooled=_to(self.pooled, device),
            choices=self.choices.to(device),
            counts=self.counts.to(device),
        )

    def pick(self, rows: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Indices into `text` of one variant per row, chosen by `draws` (uniform in [0, 1), one per row)."""
        counts = self.counts[rows]
        choice = torch.minimum((draws.to(counts.device) * counts).long(), counts - 1)
        return self.choices[rows, choice]


@dataclass(frozen=True, kw_only=True)
class LatentGroup:
    """Cached views that share one latent size (one aspect-ratio bucket), so they can share a batch."""

    latents: torch.Tensor  # [views, channels, h, w], already shifted and scaled as the VAE's config says
    text: torch.Tensor  # [views, tokens, dim]: each view's caption states
    bucket: tuple[int, int] | None = None  # (width, height) of the views in pixels; None in older indexes
    pooled: torch.Tensor | None = None  # SDXL, SD 3.5, Flux: [views, dim], each view's caption's pooled embedding
    time_ids: torch.Tensor | None = None  # SDXL: [views, 6], each view's size and crop conditioning
    captions: tuple[str, ...] = ()  # each view's caption (what `text` encodes)
    styles: tuple[str, ...] = ()  # each view's style (its image's folder in the source); () in older indexes
    variants: CaptionVariants | None = None  # augment's caption variants; None: each view trains with `text`
    repeats: torch.Tensor | None = None  # [views] long: times each view is seen per epoch; None: once each
    loss_weights: torch.Tensor | None = None  # [views]: each view's weight in the loss; None: 1 each

    def __len__(self) -> int:
        return len(self.latents)


@dataclass(frozen=True)
class LatentSet:
    """Every cached view of one split, grouped by latent size, ready for training or evaluation."""

    groups: tuple[LatentGroup, ...]  # ordered by latent size
    empty_text: torch.Tensor  # [tokens, dim]: the empty caption, for caption dropout
    dataset_fingerprint: str
    empty_pooled: torch.Tensor | None = None  # families with pooled embeddings: [dim], the empty caption's
    architecture: str = "sd1"  # the model family the cache was made for (`diffusion.families` names)

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
                variants=None if g.variants is None else g.variants.to(device),
                loss_weights=_to(g.loss_weights, device),
            )
            for g in self.groups
        )
        return replace(
            self, groups=groups, empty_text=self.empty_text.to(device), empty_pooled=_to(self.empty_pooled, device)
        )

    def reencoded(self, encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor | None]]) -> LatentSet:
        """The same views with their caption states (and pooled embeddings) computed again by `encode`
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
