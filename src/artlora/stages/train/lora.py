"""LoRA adapters with peft on the denoiser (UNet or transformer) and, optionally, the text encoder(s), saved in
the diffusers layout that `load_lora_weights` reads.

An adapter spans the pipeline components that carry one, named as the pipeline names them: `unet` or
`transformer`, and with `train_text_encoder` also `text_encoder` (and SDXL's `text_encoder_2`). Its state (what
checkpoints hold) is one flat dict whose keys are `<component>.<peft key>`.

The saved file carries two kinds of safetensors metadata: diffusers' own `lora_adapter_metadata` (the peft
LoraConfig, so DoRA and per-module ranks load as trained) and `artlora.*` provenance (base model, dataset
fingerprint, resolved config, step), which `read_metadata` (in `diffusion.adapters`) returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import LoHaConfig, LoKrConfig, LoraConfig, PeftConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from artlora import contracts
from artlora.config import ConfigError, TrainConfig
from artlora.diffusion import families
from artlora.diffusion.adapters import read_metadata

if TYPE_CHECKING:  # both mix in peft's adapter methods (add_adapter, peft_config); Any to mypy (pyproject.toml)
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

ADAPTER_FILE = "pytorch_lora_weights.safetensors"

Parts = Mapping[str, torch.nn.Module]  # pipeline component name -> that component, with its LoRA adapter


def expand_targets(targets: Iterable[str], family: families.Family) -> list[str]:
    """Group names (the family's `target_groups`; peft matches a name against the end of each module's dotted
    path) -> module names, other names kept as given; order kept, duplicates dropped."""
    names = [name for target in targets for name in family.target_groups.get(target, (target,))]
    return list(dict.fromkeys(names))


def lora_config(config: TrainConfig, targets: Iterable[str], layers: int | None = None) -> PeftConfig:
    """The adapter's peft config (LoRA, LoKr or LoHa, as `config.adapter` says) on `targets` (module names);
    `layers` limits a text encoder's adapter to its first transformer layers."""
    where: dict[str, Any] = {
        "target_modules": list(targets),
        "layers_to_transform": None if layers is None else list(range(layers)),
        "layers_pattern": None if layers is None else "layers",
    }
    if config.adapter == "lokr":
        # init_weights=True: the second factor starts at zero, so step 0 is exactly the base model.
        return LoKrConfig(
            r=config.rank,
            alpha=config.alpha,  # type: ignore[arg-type]  # peft types it int; a float scales as well
            decompose_both=config.lokr_decompose_both,
            decompose_factor=config.lokr_factor,
            init_weights=True,
            **where,
        )
    if config.adapter == "loha":
        # init_weights=True: hada_w2_b starts at zero, so step 0 is exactly the base model.
        return LoHaConfig(r=config.rank, alpha=config.alpha, init_weights=True, **where)  # type: ignore[arg-type]
    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # peft types it int; a float scales as well (alpha / r)
        lora_dropout=config.dropout,
        use_dora=config.use_dora,
        # B starts at zero, so step 0 is exactly the base model.
        init_lora_weights="gaussian",
        **where,
    )


def add_lora(denoiser: ModelMixin, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze the denoiser (UNet or transformer), attach a LoRA adapter on its family's target groups, and return
    the adapter's trainable parameters."""
    targets = expand_targets(config.target_modules, families.of_denoiser(denoiser))
    denoiser.requires_grad_(False)
    try:
        denoiser.add_adapter(lora_config(config, targets))
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"train.target_modules {list(config.target_modules)}: {err}") from err
    return [param for param in denoiser.parameters() if param.requires_grad]


def add_text_encoder_lora(
    encoder: PreTrainedModel, config: TrainConfig, targets: Iterable[str], layers: int | None = None
) -> list[torch.nn.Parameter]:
    """Freeze a CLIP text encoder, attach LoRA to the attention projections of its first `layers` transformer
    layers (all by default), return the trainable parameters."""
    encoder.requires_grad_(False)
    encoder.add_adapter(lora_config(config, targets, layers))
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
    config = module.peft_config["default"]
    values = {**config.to_dict(), "lora_dropout": 0.0} if isinstance(config, LoraConfig) else config.to_dict()
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
    family = families.of_denoiser(next(iter(parts.values())))  # the denoiser comes first
    family.save_lora({**layers, **metadata_of}, directory)
    path = Path(directory) / ADAPTER_FILE
    if metadata:
        # diffusers writes only its own metadata; add ours beside it (a LoRA file is megabytes: rewrite it).
        save_file(load_file(path), path, metadata={**read_metadata(path, prefix=""), **metadata})
    return path
