"""Stable Diffusion 3.5 (Medium, Large): an MMDiT (`SD3Transformer2DModel`) trained with rectified flow, three text
encoders (CLIP-L and OpenCLIP bigG with projections, T5-XXL; T5 optional), a 16-channel VAE with a shift.

Captions as `StableDiffusion3Pipeline.encode_prompt` makes them: both CLIPs' penultimate states concatenated and
zero-padded to T5's width, then T5's states after them along the tokens (`hidden` [77 + T, 4096]); both CLIPs'
projected pooled outputs concatenated (`pooled` [2048]). Without T5, zeros of T5's shape take its place.

LoRA groups of the MMDiT blocks: the image stream's attention, the text (context) stream's attention, both
streams' feed-forward, and the adaLN modulation. The single file: the diffusers key layout under `transformer.`
with each module's alpha / rank folded into lora_B, which ComfyUI loads for SD3 ("regular diffusers sd3 lora
format") as diffusers' `load_lora_weights` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

from artlora.data.digests import digest
from artlora.diffusion import lora_keys
from artlora.diffusion.families.base import NO_OPTIONS, Parts, TextOptions
from artlora.diffusion.families.flow import FlowFamily
from artlora.diffusion.families.sd1 import text_identity
from artlora.diffusion.text_encoding import TextEncoders

if TYPE_CHECKING:
    from artlora.data.latents import LatentGroup

# The T5 length StableDiffusion3Pipeline uses by default (`max_sequence_length`).
DEFAULT_T5_LENGTH = 256
# Names of MMDiT modules, matched by suffix (peft).
MMDIT_GROUPS: dict[str, tuple[str, ...]] = {
    # attn2: the second image-stream attention of SD 3.5 Medium's first blocks (MMDiT-X)
    "attention": tuple(f"{attn}.{proj}" for attn in ("attn", "attn2") for proj in ("to_q", "to_k", "to_v", "to_out.0")),
    "context": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"),
    "feed_forward": ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"),
    "modulation": ("norm1.linear", "norm1_context.linear"),
}


@dataclass(frozen=True)
class SD3TextEncoders(TextEncoders):
    joint_dim: int = 0  # T5's width, which the transformer's context takes; zeros of it when T5 is left out
    t5_length: int = DEFAULT_T5_LENGTH

    def layers_used(self, index: int) -> int:
        layers = self.encoders[index].config.num_hidden_layers
        return layers - 1 if index < 2 else layers  # the CLIPs feed penultimate states (and pooled: all)

    def encode(self, ids: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
        pairs = zip(self.encoders[:2], ids[:2], strict=True)
        clips = [encoder(tokens, output_hidden_states=True) for encoder, tokens in pairs]
        clip_hidden = torch.cat([output.hidden_states[-2] for output in clips], dim=-1)
        pooled = torch.cat([output[0] for output in clips], dim=-1)  # text_embeds
        if len(self.encoders) > 2:
            t5 = self.encoders[2](ids[2])[0]
        else:
            t5 = clip_hidden.new_zeros((len(clip_hidden), self.t5_length, self.joint_dim))
        clip_hidden = torch.nn.functional.pad(clip_hidden, (0, t5.shape[-1] - clip_hidden.shape[-1]))
        return torch.cat([clip_hidden, t5.to(clip_hidden.dtype)], dim=-2), pooled


def _joint_width(pipe) -> int:
    """The width of the transformer's context: T5's (equal by construction), or the transformer's config."""
    if pipe.text_encoder_3 is not None:
        return pipe.text_encoder_3.config.d_model
    return pipe.transformer.config.joint_attention_dim


class SD3(FlowFamily):
    name: ClassVar[str] = "sd3"
    label: ClassVar[str] = "Stable Diffusion 3.5"
    target_groups: ClassVar[dict[str, tuple[str, ...]]] = MMDIT_GROUPS
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2", "text_encoder_3")

    def pipeline_class(self) -> Any:  # a diffusers pipeline class (Any to mypy: diffusers is untyped here)
        return StableDiffusion3Pipeline

    def owns_pipeline_name(self, class_name: str) -> bool:
        return class_name.startswith("StableDiffusion3")

    def owns_single_file(self, keys: list[str]) -> bool:
        return any(key.startswith("model.diffusion_model.joint_blocks.") for key in keys)

    def owns(self, denoiser: torch.nn.Module) -> bool:
        return isinstance(denoiser, SD3Transformer2DModel)

    def load_options(self, text: TextOptions = NO_OPTIONS) -> dict[str, Any]:
        # Without T5 its 4.7B parameters are not even loaded: what `t5: false` saves while caching.
        if not text.t5:  # without T5 the transformer's config gives the width of the zeros in its place
            return {**super().load_options(replace(text, denoiser=True)), "text_encoder_3": None, "tokenizer_3": None}
        return super().load_options(text)

    def text_encoders(self, pipe, options: TextOptions = NO_OPTIONS) -> TextEncoders:
        t5 = options.t5 and pipe.text_encoder_3 is not None
        length = options.max_t5_length or DEFAULT_T5_LENGTH
        tokenizers = (pipe.tokenizer, pipe.tokenizer_2, *((pipe.tokenizer_3,) if t5 else ()))
        encoders = (pipe.text_encoder, pipe.text_encoder_2, *((pipe.text_encoder_3,) if t5 else ()))
        joint = _joint_width(pipe)
        return SD3TextEncoders(tokenizers, encoders, (None, None, length), joint_dim=joint, t5_length=length)

    def text_identity(self, pipe, options: TextOptions = NO_OPTIONS) -> str:
        length = options.max_t5_length or DEFAULT_T5_LENGTH
        t5 = options.t5 and pipe.text_encoder_3 is not None
        third = text_identity(pipe.text_encoder_3, pipe.tokenizer_3, length) if t5 else ("zeros", length)
        return digest(
            "sd3-text",
            text_identity(pipe.text_encoder, pipe.tokenizer),
            text_identity(pipe.text_encoder_2, pipe.tokenizer_2),
            third,
            _joint_width(pipe),
            "pad(penultimate(1)+penultimate(2)) ++ t5, pooled(1)+pooled(2)",
        )

    def conditioning(
        self, group: LatentGroup, rows: torch.Tensor | slice, pooled: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        assert group.pooled is not None  # an SD 3.5 cache has pooled embeddings
        return {"pooled_projections": group.pooled[rows] if pooled is None else pooled}

    def predict(self, model, noisy, timesteps, text, conditioning: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return model(
            hidden_states=noisy,
            encoder_hidden_states=text,
            pooled_projections=conditioning["pooled_projections"],
            timestep=timesteps,
        ).sample

    def single_file(
        self, parts: Parts, prediction_type: str, title: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        transformer = parts["transformer"]
        tensors = lora_keys.folded_state_dict(transformer, "transformer.")
        arch = "stable-diffusion-v3.5/lora"
        return tensors, lora_keys.network_metadata(transformer, "sd3", arch, "diffusers", title)

    def build_tiny(self, seed: int = 0, **options):
        from artlora.demo import tiny_transformers

        return tiny_transformers.build_tiny_sd3(seed, **options)
