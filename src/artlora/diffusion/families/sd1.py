"""Stable Diffusion 1.x and 2.x: one CLIP text encoder (its last hidden states), a UNet without added conditioning,
epsilon (1.x, 2.x base) or v-prediction (2.x 768-v); LoRA files in the kohya layout with diffusers' UNet paths."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import torch
from diffusers import StableDiffusionPipeline

from artlora.data.digests import digest
from artlora.diffusion import lora_keys
from artlora.diffusion.families.base import NO_OPTIONS, Parts, TextOptions
from artlora.diffusion.families.unet import UNetFamily
from artlora.diffusion.text_encoding import TextEncoders


def text_identity(text_encoder: torch.nn.Module, tokenizer, max_length: int | None = None) -> str:
    """One encoder's weights and how captions are tokenized (vocabulary, merges, normalisation, length)."""
    from artlora.diffusion.loading import module_fingerprint  # loading asks the families: imported late

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    # Padding and truncation are set per call; what they do is fixed by the length below.
    spec.pop("padding", None)
    spec.pop("truncation", None)
    return digest("text", module_fingerprint(text_encoder), spec, max_length or tokenizer.model_max_length)


class SD1(UNetFamily):
    name: ClassVar[str] = "sd1"
    label: ClassVar[str] = "Stable Diffusion 1.x/2.x"

    def pipeline_class(self) -> Any:  # a diffusers pipeline class (Any to mypy: diffusers is untyped here)
        return StableDiffusionPipeline

    # The fallback, asked last (`families.FAMILIES` order): a base no other family claims loads as SD 1.x/2.x.
    def owns_pipeline_name(self, class_name: str) -> bool:
        return True

    def owns_single_file(self, keys: list[str]) -> bool:
        return True

    def owns(self, denoiser: torch.nn.Module) -> bool:
        return super().owns(denoiser) and getattr(denoiser.config, "addition_embed_type", None) != "text_time"

    def load_options(self, text: TextOptions = NO_OPTIONS) -> dict[str, Any]:
        return {**super().load_options(text), "safety_checker": None, "requires_safety_checker": False}

    def text_encoders(self, pipe, options: TextOptions = NO_OPTIONS) -> TextEncoders:
        return TextEncoders((pipe.tokenizer,), (pipe.text_encoder,))

    def index_fields(self) -> dict[str, str]:
        # Indexes older than the families carry no family: they (and their names) stay what they were.
        return {}

    def text_identity(self, pipe, options: TextOptions = NO_OPTIONS) -> str:
        return text_identity(pipe.text_encoder, pipe.tokenizer)

    def single_file(
        self, parts: Parts, prediction_type: str, title: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """kohya trains SD 1.x/2.x on the diffusers UNet, so names are diffusers paths with `_` for `.`; the text
        encoder's are `lora_te_` + its Hugging Face CLIP path."""
        unet: Any = parts["unet"]  # its config is read
        tensors = lora_keys.single_file_state_dict(unet)
        for name, encoder in parts.items():
            if name != "unet":
                tensors.update(lora_keys.text_encoder_state_dict(name, encoder, {"text_encoder": "lora_te_"}))
        version, arch = "sd_v1", "stable-diffusion-v1/lora"
        # SD 2.x projects into and out of attention with linear layers, SD 1.x with 1x1 convolutions.
        if unet.config.use_linear_projection:
            version = "sd_v2"
            v_model = prediction_type == "v_prediction"
            arch = "stable-diffusion-v2-768-v/lora" if v_model else "stable-diffusion-v2-512/lora"
        metadata = lora_keys.network_metadata(unet, version, arch, "diffusers", title)
        metadata.update(ss_v2=str(version == "sd_v2"), ss_v_parameterization=str(prediction_type == "v_prediction"))
        return tensors, metadata

    def build_tiny(self, seed: int = 0, **options):
        from artlora.demo import tiny

        return tiny.build_tiny_sd(seed, **options)
