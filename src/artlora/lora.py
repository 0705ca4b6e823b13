"""LoRA adapters on the UNet with peft, saved in the diffusers layout that `load_lora_weights` reads."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from artlora.config import TrainConfig

ADAPTER_FILE = "pytorch_lora_weights.safetensors"


def add_lora(unet: torch.nn.Module, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze the UNet, attach a LoRA adapter, and return the adapter's trainable parameters."""
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            # B starts at zero, so step 0 is exactly the base model.
            init_lora_weights="gaussian",
            target_modules=list(config.target_modules),
        )
    )
    return [param for param in unet.parameters() if param.requires_grad]


def adapter_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}


def load_adapter_state(unet: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(unet, state)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"checkpoint does not match the adapter: unexpected keys {result.unexpected_keys[:3]}")


def save_adapter(unet: torch.nn.Module, directory: str | Path) -> Path:
    """Write `pytorch_lora_weights.safetensors` in the diffusers key layout."""
    StableDiffusionPipeline.save_lora_weights(
        str(directory),
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        safe_serialization=True,
    )
    return Path(directory) / ADAPTER_FILE
