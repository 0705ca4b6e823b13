"""Cached views in memory, grouped by latent size: what train and evaluate read the latent cache into.

Only torch here (no storage), so the training step can be benchmarked on a machine without an object store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True, kw_only=True)
class LatentGroup:
    """Cached views that share one latent size (one aspect-ratio bucket), so they can share a batch."""

    latents: torch.Tensor  # [views, 4, h, w], already multiplied by the VAE scaling factor
    text: torch.Tensor  # [views, tokens, dim]: each view's caption states
    bucket: tuple[int, int] | None = None  # (width, height) of the views in pixels; None in older indexes
    pooled: torch.Tensor | None = None  # SDXL: [views, dim], each view's caption's pooled embedding
    time_ids: torch.Tensor | None = None  # SDXL: [views, 6], each view's size and crop conditioning
    captions: tuple[str, ...] = ()  # each view's caption (what `text` encodes)
    styles: tuple[str, ...] = ()  # each view's style (its image's folder in the source); () in older indexes

    def __len__(self) -> int:
        return len(self.latents)

    def added_cond(self, rows: torch.Tensor | slice, pooled: torch.Tensor | None = None) -> dict | None:
        """The SDXL UNet's `added_cond_kwargs` for some views (`pooled` overrides the group's, e.g. after caption
        dropout); None for SD 1.x/2.x groups, whose UNet takes none."""
        if self.pooled is None:
            return None
        assert self.time_ids is not None  # an SDXL group has both
        return {"text_embeds": self.pooled[rows] if pooled is None else pooled, "time_ids": self.time_ids[rows]}


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
