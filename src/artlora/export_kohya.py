"""The adapter as one safetensors file in the kohya-ss key layout, the one AUTOMATIC1111, Forge, ComfyUI,
InvokeAI and diffusers' `load_lora_weights` all read.

kohya's trainer puts SD 1.x/2.x LoRAs on the diffusers UNet, so its keys are diffusers module paths with `_`
for `.`: peft's `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight` becomes
`lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight` (lora_B: `lora_up`),
and each module gets an `.alpha` scalar: the tools scale the update by alpha / rank, exactly as peft does.
diffusers' own `convert_state_dict_to_kohya` writes alpha = rank (wrong whenever alpha != rank); hence this module.

DoRA adapters are refused: peft's DoRA normalises each output channel, while the `dora_scale` of kohya-layout
files is read by AUTOMATIC1111 as a per-input-channel magnitude (LyCORIS's default) and dropped by diffusers, so
no file in this layout would give the trained model's images. They ship in the diffusers layout only.

SDXL adapters are refused too: kohya names SDXL LoRA modules by the original (SGM) UNet's paths
(`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`), not diffusers' paths, and that mapping is not
implemented here. They ship in the diffusers layout, which diffusers, ComfyUI and Forge also read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

PREFIX = "lora_unet_"


class UnsupportedAdapterError(ValueError):
    """An adapter that this layout cannot express without changing its output."""


_SUFFIXES = {".lora_A.weight": ".lora_down.weight", ".lora_B.weight": ".lora_up.weight"}
_MAGNITUDE = ".lora_magnitude_vector"


def kohya_name(module_path: str) -> str:
    """`down_blocks.1.attentions.0.proj_in` -> `lora_unet_down_blocks_1_attentions_0_proj_in`."""
    return PREFIX + module_path.replace(".", "_")


def kohya_state_dict(peft_state: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """peft's UNet adapter state (no adapter name in the keys) -> kohya keys, with one alpha per module."""
    out: dict[str, torch.Tensor] = {}
    for key, value in peft_state.items():
        value = value.detach().float().cpu().contiguous()
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is not None:
            name = kohya_name(key[: -len(suffix)])
            out[name + _SUFFIXES[suffix]] = value
            out[name + ".alpha"] = torch.tensor(float(alpha))
        elif key.endswith(_MAGNITUDE):
            raise UnsupportedAdapterError(
                "a DoRA adapter has no faithful kohya-layout form (AUTOMATIC1111 reads dora_scale per input "
                "channel, peft trains it per output channel); use the diffusers-layout file"
            )
        else:
            raise ValueError(f"cannot export adapter key {key!r} in the kohya layout")
    return out


def architecture(unet: torch.nn.Module, prediction_type: str) -> tuple[str, str]:
    """(kohya's ss_base_model_version, the model spec's architecture) of the base model."""
    if unet.config.cross_attention_dim == 1024:
        return "sd_v2", "stable-diffusion-v2-768-v/lora" if prediction_type == "v_prediction" else (
            "stable-diffusion-v2-512/lora"
        )
    return "sd_v1", "stable-diffusion-v1/lora"


def kohya_metadata(unet: torch.nn.Module, prediction_type: str, title: str) -> dict[str, str]:
    """The `ss_*` and `modelspec.*` entries that the UIs read to show and check a LoRA."""
    config = unet.peft_config["default"]
    version, arch = architecture(unet, prediction_type)
    targets = sorted(config.target_modules)
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config.r),
        "ss_network_alpha": str(float(config.lora_alpha)),
        "ss_network_args": json.dumps({"target_modules": targets, "dora": bool(config.use_dora)}),
        "ss_base_model_version": version,
        "ss_v2": str(version == "sd_v2"),
        "ss_v_parameterization": str(prediction_type == "v_prediction"),
        "ss_output_name": title,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": arch,
        "modelspec.implementation": "diffusers",
        "modelspec.title": title,
    }


def save_kohya(
    unet: torch.nn.Module, path: str | Path, prediction_type: str, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write the UNet's LoRA adapter to `path` in the kohya layout, with kohya's and our metadata."""
    path = Path(path)
    if getattr(unet.config, "addition_embed_type", None) == "text_time":
        raise UnsupportedAdapterError(
            "SDXL adapters have no kohya-layout export yet (kohya names SDXL modules by the original UNet's "
            "input_blocks/middle_block/output_blocks paths); use the diffusers-layout adapter"
        )
    alpha = unet.peft_config["default"].lora_alpha
    tensors = kohya_state_dict(get_peft_model_state_dict(unet), alpha)
    entries = {"format": "pt", **kohya_metadata(unet, prediction_type, path.stem), **(metadata or {})}
    save_file(tensors, path, metadata=entries)
    return path
