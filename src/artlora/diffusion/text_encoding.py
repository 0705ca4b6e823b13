"""Caption states from a pipeline's tokenizer(s) and text encoder(s), as its pipeline encodes a prompt.

Augment caches them once per caption; when the text encoders train (`train.train_text_encoder`), the trainer
computes them every step through the adapted encoders instead, from the same token ids.

`TextEncoders` is what every family shares (tokenizing, batching, the cache rows); how the encoders' outputs
combine into the caption states is the family's (`diffusion.families`): this base class reads one encoder's
last hidden states, as Stable Diffusion 1.x/2.x does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TextEncoders:
    tokenizers: tuple
    # transformers text models (CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel), or DDP around them in
    # the trainer's forward copy; transformers is not typed for mypy here (pyproject.toml)
    encoders: tuple[Any, ...]
    # Per tokenizer, the token length captions are padded and cut to; None for the tokenizer's own maximum.
    max_lengths: tuple[int | None, ...] = ()

    def layers_used(self, index: int) -> int:
        """How many of encoder `index`'s transformer layers feed what `encode` returns (an adapter on a layer
        that feeds nothing would never train, and DDP refuses parameters that get no gradient)."""
        return self.encoders[index].config.num_hidden_layers

    def length(self, index: int) -> int:
        given = self.max_lengths[index] if index < len(self.max_lengths) else None
        return given or self.tokenizers[index].model_max_length

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """Token ids [captions, length] per tokenizer, padded and truncated as the pipelines do."""
        return tuple(
            tokenizer(
                list(captions),
                padding="max_length",
                max_length=self.length(index),
                truncation=True,
                return_tensors="pt",
            ).input_ids
            for index, tokenizer in enumerate(self.tokenizers)
        )

    def encode(self, ids: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden [n, tokens, dim], pooled [n, dim] or None) for token ids already on the encoders' device.
        Gradients flow when the encoders have trainable (LoRA) weights."""
        return self.encoders[0](ids[0])[0], None

    @property
    def device(self) -> torch.device:
        return next(encoder for encoder in self.encoders if encoder is not None).device

    @torch.no_grad()
    def encode_captions(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`encode` from captions, on the encoders' device; the states come back to the CPU in fp32."""
        device = self.device
        hidden, pooled = self.encode(tuple(tokens.to(device) for tokens in self.tokenize(captions)))
        return hidden.float().cpu(), None if pooled is None else pooled.float().cpu()

    def states(self, captions: list[str]) -> list[dict[str, torch.Tensor]]:
        """Per caption, `hidden` [tokens, dim] (and `pooled` [dim] where the family has one): one cache shard each."""
        hidden, pooled = self.encode_captions(captions)
        rows = [{"hidden": h} for h in hidden.unbind()]
        if pooled is not None:
            for row, p in zip(rows, pooled.unbind(), strict=True):
                row["pooled"] = p
        return rows
