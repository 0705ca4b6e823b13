"""LoRA adapters on the UNet with peft, saved in the diffusers layout that `load_lora_weights` reads.

The saved file carries two kinds of safetensors metadata: diffusers' own `lora_adapter_metadata` (the peft
LoraConfig, so DoRA and per-module ranks load as trained) and `artlora.*` provenance (base model, dataset
fingerprint, resolved config, step), which `read_metadata` returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from artlora.config import TrainConfig

ADAPTER_FILE = "pytorch_lora_weights.safetensors"
METADATA_PREFIX = "artlora."

# Named groups of UNet layers. peft matches a name against the end of each module's dotted path.
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("to_q", "to_k", "to_v", "to_out.0"),
    "feed_forward": ("ff.net.0.proj", "ff.net.2"),
    "convolutions": ("conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv"),
}


def expand_targets(targets: Iterable[str]) -> list[str]:
    """Group names -> module names, other names kept as given; order kept, duplicates dropped."""
    names = [name for target in targets for name in TARGET_GROUPS.get(target, (target,))]
    return list(dict.fromkeys(names))


def lora_config(config: TrainConfig) -> LoraConfig:
    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        use_dora=config.use_dora,
        # B starts at zero, so step 0 is exactly the base model.
        init_lora_weights="gaussian",
        target_modules=expand_targets(config.target_modules),
    )


def add_lora(unet: torch.nn.Module, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze the UNet, attach a LoRA adapter, and return the adapter's trainable parameters."""
    unet.requires_grad_(False)
    try:
        unet.add_adapter(lora_config(config))
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise ValueError(f"train.target_modules {list(config.target_modules)}: {err}") from err
    return [param for param in unet.parameters() if param.requires_grad]


def adapter_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the adapter's weights in peft's key layout, on the CPU (what checkpoints hold). A copy also on
    the CPU, where `.cpu()` alone would return the live parameters that training goes on changing."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in get_peft_model_state_dict(unet).items()}


def load_adapter_state(unet: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(unet, dict(state))
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"checkpoint does not match the adapter: unexpected keys {result.unexpected_keys[:3]}")


def adapter_metadata(unet: torch.nn.Module) -> dict:
    """The peft LoraConfig as diffusers stores it (JSON-able: sets become sorted lists), without dropout:
    diffusers attaches the loaded LoRA layers in training mode, so a dropout rate here would drop activations
    in every image generated afterwards, even in an eval-mode pipeline."""
    values = {**unet.peft_config["default"].to_dict(), "lora_dropout": 0.0}
    return {k: sorted(v) if isinstance(v, set) else v for k, v in values.items()}


def provenance(
    config: TrainConfig, step: int, dataset_fingerprint: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Where an adapter came from, as safetensors metadata (strings only)."""
    values = {
        "base_model": config.base_model,
        "dataset_fingerprint": dataset_fingerprint,
        "step": str(step),
        "config": json.dumps(config.model_dump(mode="json"), sort_keys=True),
        **(extra or {}),
    }
    return {METADATA_PREFIX + key: value for key, value in values.items()}


def save_adapter(unet: torch.nn.Module, directory: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write `pytorch_lora_weights.safetensors` in the diffusers key layout, with the adapter's metadata."""
    # peft's key names as they are: diffusers' convert_state_dict_to_diffusers renames only the attention keys
    # (to the old `.lora.down` names), and load_lora_weights then silently drops those from a file that also
    # holds feed-forward or convolution keys in peft names.
    StableDiffusionPipeline.save_lora_weights(
        str(directory),
        unet_lora_layers=get_peft_model_state_dict(unet),
        unet_lora_adapter_metadata=adapter_metadata(unet),
        safe_serialization=True,
    )
    path = Path(directory) / ADAPTER_FILE
    if metadata:
        # diffusers writes only its own metadata; add ours beside it (a LoRA file is megabytes: rewrite it).
        save_file(load_file(path), path, metadata={**read_metadata(path, prefix=""), **metadata})
    return path


def read_metadata(path: str | Path, prefix: str = METADATA_PREFIX) -> dict[str, str]:
    """A safetensors file's metadata entries whose keys start with `prefix` (all of them for "")."""
    with safe_open(str(path), framework="pt") as handle:
        return {k: v for k, v in (handle.metadata() or {}).items() if k.startswith(prefix)}
