"""Caption states from a pipeline's tokenizer(s) and text encoder(s), as its pipeline encodes a prompt.

Augment caches them once per caption; when the text encoders train (`train.train_text_encoder`), the trainer
computes them every step through the adapted encoders instead, from the same token ids.

SD 1.x/2.x: the text encoder's last hidden states. SDXL: both encoders' penultimate hidden states concatenated,
and the second encoder's pooled, projected output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TextEncoders:
    tokenizers: tuple
    # transformers text models (CLIPTextModel, CLIPTextModelWithProjection), or DDP around them in the trainer's
    # forward copy; transformers is not typed for mypy here (pyproject.toml)
    encoders: tuple[Any, ...]

    @classmethod
    def of(cls, pipe) -> TextEncoders:
        """The pipeline's tokenizer(s) and text encoder(s), in its order (SDXL has two of each)."""
        second = getattr(pipe, "text_encoder_2", None)
        if second is None:
            return cls((pipe.tokenizer,), (pipe.text_encoder,))
        return cls((pipe.tokenizer, pipe.tokenizer_2), (pipe.text_encoder, second))

    @property
    def sdxl(self) -> bool:
        return len(self.encoders) == 2

    def layers_used(self, index: int) -> int:
        """How many of encoder `index`'s transformer layers feed what `encode` returns. SDXL reads penultimate
        states, so the first encoder's last layer is never used (an adapter there would never train, and DDP
        refuses parameters that get no gradient); the second's last layer feeds the pooled output."""
        layers = self.encoders[index].config.num_hidden_layers
        return layers - 1 if self.sdxl and index == 0 else layers

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """Token ids [captions, model length] per tokenizer, padded and truncated as the pipelines do."""
        return tuple(
            tokenizer(
                list(captions),
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            for tokenizer in self.tokenizers
        )

    def encode(self, ids: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden [n, tokens, dim], pooled [n, dim] or None) for token ids already on the encoders' device.
        Gradients flow when the encoders have trainable (LoRA) weights."""
        if not self.sdxl:
            return self.encoders[0](ids[0])[0], None
        pairs = zip(self.encoders, ids, strict=True)
        outputs = [encoder(tokens, output_hidden_states=True) for encoder, tokens in pairs]
        hidden = torch.cat([output.hidden_states[-2] for output in outputs], dim=-1)
        return hidden, outputs[-1][0]  # CLIPTextModelWithProjection's text_embeds

    @torch.no_grad()
    def encode_captions(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`encode` from captions, on the encoders' device; the states come back to the CPU in fp32."""
        device = self.encoders[0].device
        hidden, pooled = self.encode(tuple(tokens.to(device) for tokens in self.tokenize(captions)))
        return hidden.float().cpu(), None if pooled is None else pooled.float().cpu()

    def states(self, captions: list[str]) -> list[dict[str, torch.Tensor]]:
        """Per caption, `hidden` [tokens, dim] (and SDXL's `pooled` [dim]): one cache shard each."""
        hidden, pooled = self.encode_captions(captions)
        rows = [{"hidden": h} for h in hidden.unbind()]
        if pooled is not None:
            for row, p in zip(rows, pooled.unbind(), strict=True):
                row["pooled"] = p
        return rows
