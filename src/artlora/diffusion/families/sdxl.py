"""SDXL: two CLIP text encoders (both penultimate hidden states concatenated; the second's pooled, projected
output), a UNet with "text_time" added conditioning (pooled embedding and size/crop time ids), epsilon target;
LoRA files in the kohya layout with the original (SGM) UNet's paths (`sgm_names`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from diffusers import StableDiffusionXLPipeline

from artlora.data.digests import digest
from artlora.diffusion import lora_keys
from artlora.diffusion.families import sgm_names
from artlora.diffusion.families.base import NO_OPTIONS, Parts, TextOptions
from artlora.diffusion.families.sd1 import text_identity
from artlora.diffusion.families.unet import UNetFamily
from artlora.diffusion.text_encoding import TextEncoders

if TYPE_CHECKING:
    from artlora.data.latents import LatentGroup

# In an original-layout (SGM) checkpoint, the tensors of SDXL's second text encoder (OpenCLIP ViT-bigG).
SINGLE_FILE_PREFIX = "conditioner.embedders.1."
# The origin of the key names, as kohya writes it: SGM (Stability AI's code) paths.
SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


@dataclass(frozen=True)
class SDXLTextEncoders(TextEncoders):
    def layers_used(self, index: int) -> int:
        """SDXL reads penultimate states, so the first encoder's last layer is never used; the second's last
        layer feeds the pooled output."""
        layers = self.encoders[index].config.num_hidden_layers
        return layers - 1 if index == 0 else layers

    def encode(self, ids: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
        pairs = zip(self.encoders, ids, strict=True)
        outputs = [encoder(tokens, output_hidden_states=True) for encoder, tokens in pairs]
        hidden = torch.cat([output.hidden_states[-2] for output in outputs], dim=-1)
        return hidden, outputs[-1][0]  # CLIPTextModelWithProjection's text_embeds


class SDXL(UNetFamily):
    name: ClassVar[str] = "sdxl"
    label: ClassVar[str] = "SDXL"
    cached_text: ClassVar[tuple[str, ...]] = ("hidden", "pooled")
    time_ids: ClassVar[bool] = True
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder", "text_encoder_2")

    def pipeline_class(self) -> Any:  # a diffusers pipeline class (Any to mypy: diffusers is untyped here)
        return StableDiffusionXLPipeline

    def owns_pipeline_name(self, class_name: str) -> bool:
        return class_name.startswith("StableDiffusionXL")

    def owns_single_file(self, keys: list[str]) -> bool:
        return any(key.startswith(SINGLE_FILE_PREFIX) for key in keys)

    def owns(self, denoiser: torch.nn.Module) -> bool:
        return super().owns(denoiser) and getattr(denoiser.config, "addition_embed_type", None) == "text_time"

    def text_encoders(self, pipe, options: TextOptions = NO_OPTIONS) -> TextEncoders:
        return SDXLTextEncoders((pipe.tokenizer, pipe.tokenizer_2), (pipe.text_encoder, pipe.text_encoder_2))

    def text_identity(self, pipe, options: TextOptions = NO_OPTIONS) -> str:
        """Both encoders with their tokenizers, and what is cached from them."""
        return digest(
            "sdxl-text",
            text_identity(pipe.text_encoder, pipe.tokenizer),
            text_identity(pipe.text_encoder_2, pipe.tokenizer_2),
            "penultimate(1)+penultimate(2), pooled(2)",
        )

    def conditioning(
        self, group: LatentGroup, rows: torch.Tensor | slice, pooled: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The UNet's `added_cond_kwargs`: each view's caption's pooled embedding and its size/crop time ids."""
        assert group.pooled is not None and group.time_ids is not None  # an SDXL group has both
        return {"text_embeds": group.pooled[rows] if pooled is None else pooled, "time_ids": group.time_ids[rows]}

    def single_file(
        self, parts: Parts, prediction_type: str, title: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        unet = parts["unet"]
        state = lora_keys.peft_state(unet)
        modules = {key.rsplit(".lora_", 1)[0] for key in state if ".lora_" in key}
        sgm_names.check_diffusers_reads(sgm_names.sgm_path(module, unet.config) for module in modules)
        rename = lambda module: lora_keys.kohya_name(sgm_names.sgm_path(module, unet.config))  # noqa: E731
        tensors = lora_keys.single_file_state_dict(unet, rename)
        prefixes: Mapping[str, str] = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
        for name, encoder in parts.items():
            if name != "unet":
                tensors.update(lora_keys.text_encoder_state_dict(name, encoder, prefixes))
        arch = "stable-diffusion-xl-v1-base/lora"
        metadata = lora_keys.network_metadata(unet, "sdxl_base_v1-0", arch, SGM_IMPLEMENTATION, title)
        metadata.update(ss_v2="False", ss_v_parameterization=str(prediction_type == "v_prediction"))
        return tensors, metadata

    def build_tiny(self, seed: int = 0, **options):
        from artlora.demo import tiny

        return tiny.build_tiny_sdxl(seed, **options)
