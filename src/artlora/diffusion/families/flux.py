"""Flux.1 (dev, schnell): a rectified-flow transformer (`FluxTransformer2DModel`: double-stream blocks like SD3's
MMDiT, then single-stream blocks), CLIP-L's pooled output and T5-XXL's states, a 16-channel VAE with a shift,
latents packed into 2x2 patches (64 values per token) with positional ids, and (dev) a guidance embedding.

Captions as `FluxPipeline.encode_prompt` makes them: T5's states (`hidden` [T, 4096]) and CLIP-L's pooled output
(`pooled` [768]). The cache keeps latents unpacked [16, h, w]; `predict` packs them, builds the image and text
ids, runs the transformer and unpacks its output, so noising, target and the held-out loss are the shared flow
foundation's. Timesteps are shifted by resolution when the scheduler says so (`use_dynamic_shifting`, as
Flux.1-dev's does). Distilled guidance is fed as `TRAINING_GUIDANCE` while training (1.0, as LoRA trainers for
Flux.1-dev commonly use) where the transformer has a guidance embedding (dev; schnell has none).

The single file: the diffusers key layout under `transformer.` with alpha / rank folded into lora_B, which
ComfyUI and diffusers' `load_lora_weights` load for Flux.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel

from artlora.data.digests import digest
from artlora.diffusion import lora_keys
from artlora.diffusion.families.base import NO_OPTIONS, Parts, TextOptions
from artlora.diffusion.families.flow import TIMESTEPS, FlowFamily
from artlora.diffusion.families.sd1 import text_identity
from artlora.diffusion.text_encoding import TextEncoders

if TYPE_CHECKING:
    from artlora.data.latents import LatentGroup

DEFAULT_T5_LENGTH = 512  # FluxPipeline's default max_sequence_length (dev)
TRAINING_GUIDANCE = 1.0
FLUX_GROUPS: dict[str, tuple[str, ...]] = {
    # double blocks' image stream, and the single blocks' attention (which has no output projection of its own)
    "attention": ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"),
    "context": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"),
    "feed_forward": ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "proj_mlp"),
    "modulation": ("norm1.linear", "norm1_context.linear", "norm.linear"),
}


@dataclass(frozen=True)
class FluxTextEncoders(TextEncoders):
    def encode(self, ids: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
        pooled = self.encoders[0](ids[0], output_hidden_states=False).pooler_output
        return self.encoders[1](ids[1])[0], pooled


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[n, c, h, w] -> [n, (h/2)(w/2), 4c]: 2x2 patches as tokens, as FluxPipeline._pack_latents."""
    n, c, h, w = latents.shape
    patches = latents.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(n, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for latents of height x width."""
    n, _, packed = tokens.shape
    c = packed // 4
    patches = tokens.view(n, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(n, c, height, width)


def image_ids(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Each token's (0, row, column) for latents of height x width, as FluxPipeline._prepare_latent_image_ids."""
    rows = torch.arange(height // 2, device=device).view(-1, 1).expand(-1, width // 2)
    cols = torch.arange(width // 2, device=device).view(1, -1).expand(height // 2, -1)
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()


def _config(model) -> Any:
    """The transformer's config through the wrappers the trainer puts around it (DDP, torch.compile)."""
    for name in ("module", "_orig_mod"):
        model = getattr(model, name, model)
    return model.config


class Flux(FlowFamily):
    name: ClassVar[str] = "flux"
    label: ClassVar[str] = "Flux.1"
    target_groups: ClassVar[dict[str, tuple[str, ...]]] = FLUX_GROUPS
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2")

    def pipeline_class(self) -> Any:  # a diffusers pipeline class (Any to mypy: diffusers is untyped here)
        return FluxPipeline

    def owns_pipeline_name(self, class_name: str) -> bool:
        return class_name.startswith("Flux")

    def owns_single_file(self, keys: list[str]) -> bool:
        return any(key.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for key in keys)

    def owns(self, denoiser: torch.nn.Module) -> bool:
        return isinstance(denoiser, FluxTransformer2DModel)

    def text_encoders(self, pipe, options: TextOptions = NO_OPTIONS) -> TextEncoders:
        length = options.max_t5_length or DEFAULT_T5_LENGTH
        return FluxTextEncoders(
            (pipe.tokenizer, pipe.tokenizer_2), (pipe.text_encoder, pipe.text_encoder_2), (None, length)
        )

    def text_identity(self, pipe, options: TextOptions = NO_OPTIONS) -> str:
        length = options.max_t5_length or DEFAULT_T5_LENGTH
        return digest(
            "flux-text",
            text_identity(pipe.text_encoder, pipe.tokenizer),
            text_identity(pipe.text_encoder_2, pipe.tokenizer_2, length),
            "t5, pooled(clip)",
        )

    def conditioning(
        self, group: LatentGroup, rows: torch.Tensor | slice, pooled: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        assert group.pooled is not None  # a Flux cache has pooled embeddings
        return {"pooled_projections": group.pooled[rows] if pooled is None else pooled}

    def predict(self, model, noisy, timesteps, text, conditioning: Mapping[str, torch.Tensor]) -> torch.Tensor:
        height, width = noisy.shape[-2:]
        guidance = None
        if _config(model).guidance_embeds:
            guidance = torch.full((len(noisy),), TRAINING_GUIDANCE, device=noisy.device)
        output = model(
            hidden_states=pack(noisy),
            encoder_hidden_states=text,
            pooled_projections=conditioning["pooled_projections"],
            timestep=timesteps / TIMESTEPS,  # FluxTransformer2DModel scales by 1000 itself
            img_ids=image_ids(height, width, noisy.device),
            txt_ids=torch.zeros(text.shape[1], 3, device=noisy.device),
            guidance=guidance,
        ).sample
        return unpack(output, height, width)

    def single_file(
        self, parts: Parts, prediction_type: str, title: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        transformer = parts["transformer"]
        tensors = lora_keys.folded_state_dict(transformer, "transformer.")
        return tensors, lora_keys.network_metadata(transformer, "flux1", "flux-1-dev/lora", "diffusers", title)

    def build_tiny(self, seed: int = 0, **options):
        from artlora.demo import tiny_transformers

        return tiny_transformers.build_tiny_flux(seed, **options)
