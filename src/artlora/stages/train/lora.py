"""LoRA adapters with peft on the UNet and, optionally, the text encoder(s), saved in the diffusers layout that
`load_lora_weights` reads.

An adapter spans the pipeline components that carry one, named as the pipeline names them: `unet`, and with
`train_text_encoder` also `text_encoder` (and SDXL's `text_encoder_2`). Its state (what checkpoints hold) is one
flat dict whose keys are `<component>.<peft key>`.

The saved file carries two kinds of safetensors metadata: diffusers' own `lora_adapter_metadata` (the peft
LoraConfig, so DoRA and per-module ranks load as trained) and `artlora.*` provenance (base model, dataset
fingerprint, resolved config, step), which `read_metadata` (in `diffusion.adapters`) returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from artlora import contracts
from artlora.config import ConfigError, TrainConfig
from artlora.diffusion.adapters import read_metadata
from artlora.diffusion.architecture import is_sdxl

if TYPE_CHECKING:  # both mix in peft's adapter methods (add_adapter, peft_config); Any to mypy (pyproject.toml)
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

ADAPTER_FILE = "pytorch_lora_weights.safetensors"

# Named groups of UNet layers. peft matches a name against the end of each module's dotted path.
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("to_q", "to_k", "to_v", "to_out.0"),
    "feed_forward": ("ff.net.0.proj", "ff.net.2"),
    "convolutions": ("conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv"),
}
# The text encoders' (CLIP) attention projections: the layers kohya and the diffusers examples adapt there.
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")

Parts = Mapping[str, torch.nn.Module]  # pipeline component name -> that component, with its LoRA adapter


def expand_targets(targets: Iterable[str]) -> list[str]:
    """Group names -> module names, other names kept as given; order kept, duplicates dropped."""
    names = [name for target in targets for name in TARGET_GROUPS.get(target, (target,))]
    return list(dict.fromkeys(names))


def lora_config(config: TrainConfig, targets: Iterable[str] | None = None, layers: int | None = None) -> LoraConfig:
    """The adapter's peft config; `targets` (module names) default to the config's UNet target groups; `layers`
    limits a text encoder's adapter to its first transformer layers."""
    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # peft types it int; a float scales as well (alpha / r)
        lora_dropout=config.dropout,
        use_dora=config.use_dora,
        # B starts at zero, so step 0 is exactly the base model.
        init_lora_weights="gaussian",
        target_modules=list(targets or expand_targets(config.target_modules)),
        layers_to_transform=None if layers is None else list(range(layers)),
        layers_pattern=None if layers is None else "layers",
    )


def add_lora(unet: ModelMixin, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze the UNet, attach a LoRA adapter, and return the adapter's trainable parameters."""
    unet.requires_grad_(False)
    try:
        unet.add_adapter(lora_config(config))
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"train.target_modules {list(config.target_modules)}: {err}") from err
    return [param for param in unet.parameters() if param.requires_grad]


def add_text_encoder_lora(
    encoder: PreTrainedModel, config: TrainConfig, layers: int | None = None
) -> list[torch.nn.Parameter]:
    """Freeze a CLIP text encoder, attach LoRA to the attention projections of its first `layers` transformer
    layers (all by default), return the trainable parameters."""
    encoder.requires_grad_(False)
    encoder.add_adapter(lora_config(config, TEXT_ENCODER_TARGETS, layers))
    return [param for param in encoder.parameters() if param.requires_grad]


def adapter_state(parts: Parts) -> dict[str, torch.Tensor]:
    """A copy of the adapter's weights, `<component>.<peft key>`, on the CPU (what checkpoints hold). A copy also
    on the CPU, where `.cpu()` alone would return the live parameters that training goes on changing."""
    return {
        f"{name}.{key}": value.detach().to("cpu", copy=True).contiguous()
        for name, module in parts.items()
        for key, value in get_peft_model_state_dict(module).items()
    }


def load_adapter_state(parts: Parts, state: Mapping[str, torch.Tensor]) -> None:
    components = {key.split(".", 1)[0] for key in state}
    if components != set(parts):
        raise ValueError(f"checkpoint holds an adapter for {sorted(components)}, this run trains {sorted(parts)}")
    for name, module in parts.items():
        prefix = name + "."
        own = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        unexpected = getattr(set_peft_model_state_dict(module, own), "unexpected_keys", None)
        if unexpected:
            raise ValueError(f"checkpoint does not match the {name} adapter: unexpected keys {unexpected[:3]}")


def adapter_metadata(module: ModelMixin | PreTrainedModel) -> dict:
    """The peft LoraConfig as diffusers stores it (JSON-able: sets become sorted lists), without dropout:
    diffusers attaches the loaded LoRA layers in training mode, so a dropout rate here would drop activations
    in every image generated afterwards, even in an eval-mode pipeline."""
    values = {**module.peft_config["default"].to_dict(), "lora_dropout": 0.0}
    return {k: sorted(v) if isinstance(v, set) else v for k, v in values.items()}


def provenance(
    config: TrainConfig, step: int, dataset_fingerprint: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Where an adapter came from, as safetensors metadata (strings only)."""
    return {
        contracts.BASE_MODEL_METADATA: config.base_model,
        contracts.DATASET_FINGERPRINT_METADATA: dataset_fingerprint,
        contracts.STEP_METADATA: str(step),
        contracts.CONFIG_METADATA: json.dumps(config.model_dump(mode="json"), sort_keys=True),
        **{contracts.METADATA_PREFIX + key: value for key, value in (extra or {}).items()},
    }


def save_adapter(parts: Parts, directory: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write `pytorch_lora_weights.safetensors` in the diffusers key layout, with the adapter's metadata."""
    # peft's key names as they are: diffusers' convert_state_dict_to_diffusers renames only the attention keys
    # (to the old `.lora.down` names), and load_lora_weights then silently drops those from a file that also
    # holds feed-forward or convolution keys in peft names.
    layers = {f"{name}_lora_layers": get_peft_model_state_dict(module) for name, module in parts.items()}
    metadata_of = {f"{name}_lora_adapter_metadata": adapter_metadata(module) for name, module in parts.items()}
    pipeline = StableDiffusionXLPipeline if is_sdxl(parts["unet"]) else StableDiffusionPipeline
    pipeline.save_lora_weights(str(directory), **layers, **metadata_of, safe_serialization=True)
    path = Path(directory) / ADAPTER_FILE
    if metadata:
        # diffusers writes only its own metadata; add ours beside it (a LoRA file is megabytes: rewrite it).
        save_file(load_file(path), path, metadata={**read_metadata(path, prefix=""), **metadata})
    return path
