"""Single-file LoRA keys in the kohya-ss layout, which AUTOMATIC1111, Forge, ComfyUI, InvokeAI and diffusers'
`load_lora_weights` read: the helpers every family's `single_file` shares.

Each LoRA module is one name with `.lora_down.weight` (peft's lora_A), `.lora_up.weight` (lora_B) and an
`.alpha` scalar; every reader scales the update by alpha / rank, as peft does. diffusers' own
`convert_state_dict_to_kohya` writes alpha = rank (wrong whenever alpha != rank); hence this module. Which module
path becomes which name is the family's (`diffusion.families`).

LoKr and LoHa adapters (peft's LyCORIS tuners) take the LyCORIS keys on the same names (`lycoris_state_dict`).

Refused (`UnsupportedAdapterError`), because no file in this layout would give the trained model's images:
- DoRA: peft's DoRA normalises each output channel, while the `dora_scale` of kohya-layout files is read by
  AUTOMATIC1111 as a per-input-channel magnitude (LyCORIS's default) and dropped by diffusers. DoRA adapters
  ship in the diffusers layout only.
- LoRA biases and LoRA on embeddings, which kohya's format has no keys for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from peft import LoKrConfig, LoraConfig
from peft.tuners.lora import LoraLayer
from peft.tuners.lycoris_utils import LycorisLayer
from peft.utils import get_peft_model_state_dict

PREFIX = "lora_unet_"
ADAPTER = "default"  # the adapter name add_adapter gives when none is passed


class UnsupportedAdapterError(ValueError):
    """An adapter that this layout cannot express without changing its output."""


_SUFFIXES = {".lora_A.weight": ".lora_down.weight", ".lora_B.weight": ".lora_up.weight"}
_MAGNITUDE = ".lora_magnitude_vector"


def kohya_name(module_path: str, prefix: str = PREFIX) -> str:
    """`down_blocks.1.attentions.0.proj_in` -> `lora_unet_down_blocks_1_attentions_0_proj_in`."""
    return prefix + module_path.replace(".", "_")


def kohya_state_dict(
    peft_state: Mapping[str, torch.Tensor],
    alpha: float | Mapping[str, float],
    rename: Callable[[str], str] = kohya_name,
) -> dict[str, torch.Tensor]:
    """peft adapter state (no adapter name in the keys) -> kohya keys, with one alpha per module: `alpha` for
    all of them, or per module path; `rename` turns a module path into its kohya name."""
    out: dict[str, torch.Tensor] = {}
    for key, value in peft_state.items():
        value = value.detach().float().cpu().contiguous()
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is not None:
            module = key[: -len(suffix)]
            name = rename(module)
            out[name + _SUFFIXES[suffix]] = value
            out[name + ".alpha"] = torch.tensor(float(alpha if isinstance(alpha, int | float) else alpha[module]))
        elif key.endswith(_MAGNITUDE):
            raise UnsupportedAdapterError(
                "a DoRA adapter has no faithful kohya-layout form (AUTOMATIC1111 reads dora_scale per input "
                "channel, peft trains it per output channel); use the diffusers-layout file"
            )
        else:
            raise UnsupportedAdapterError(f"the kohya layout has no key for adapter weight {key!r}")
    return out


def single_file_state_dict(
    model: torch.nn.Module, rename: Callable[[str], str] = kohya_name
) -> dict[str, torch.Tensor]:
    """A UNet's or CLIP text encoder's adapter in the single-file layout: kohya LoRA keys, or LyCORIS keys for
    a LoKr/LoHa adapter; `rename` turns a module path into its kohya name."""
    if any(isinstance(module, LycorisLayer) for module in model.modules()):
        return lycoris_state_dict(model, rename)
    return kohya_state_dict(peft_state(model), module_alphas(model), rename)


def lycoris_state_dict(model: torch.nn.Module, rename: Callable[[str], str] = kohya_name) -> dict[str, torch.Tensor]:
    """A LoKr/LoHa adapter as the LyCORIS loaders of AUTOMATIC1111 and ComfyUI read it: `<name>.<weight>` with
    peft's weight names (`lokr_w1`, `lokr_w2_a`, `hada_w1_a`, ...) and an `.alpha` per module.

    Those loaders scale the rebuilt update by alpha / rank, the rank being the inner size of a low-rank factor
    (LoHa's hada_w1_b rows; LoKr's lokr_w2_b or lokr_w1_b rows), and by 1 when a LoKr module has no low-rank
    factor. peft scales every module by alpha / r. So a LoHa module and a LoKr module with a low-rank factor keep
    peft's alpha, and a LoKr module of two full factors gets peft's scale folded into lokr_w2 and alpha = r (as
    LyCORIS itself writes such modules), which every reader applies as 1.
    """
    out: dict[str, torch.Tensor] = {}
    for path, module in model.named_modules():
        if not isinstance(module, LycorisLayer) or ADAPTER not in module.r:
            continue
        name = rename(path)
        weights = {
            attr: getattr(module, attr)[ADAPTER].detach().float().cpu().contiguous()
            for attr in module.adapter_layer_names
            if ADAPTER in getattr(module, attr)
        }
        alpha, rank = float(module.alpha[ADAPTER]), module.r[ADAPTER]
        if "lokr_w1" in weights and "lokr_w2" in weights:
            weights["lokr_w2"] = (weights["lokr_w2"] * module.scaling[ADAPTER]).contiguous()
            alpha = float(rank)
        out.update({f"{name}.{attr}": value for attr, value in weights.items()})
        out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


def module_alphas(model: torch.nn.Module) -> dict[str, float]:
    """Each LoRA module's alpha such that alpha / rank is peft's scaling (rsLoRA's alpha / sqrt(rank) too)."""
    alphas = {}
    for path, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_alpha:
            alpha, rank = module.lora_alpha[ADAPTER], module.r[ADAPTER]
            alphas[path] = alpha * math.sqrt(rank) if module.use_rslora.get(ADAPTER) else alpha
    return alphas


def text_model_path(path: str) -> str:
    """transformers >= 5.6 drops CLIPTextModel's `text_model.` level; kohya names (and every reader) keep it."""
    return path if path.startswith(("text_model.", "text_projection")) else "text_model." + path


def text_encoder_state_dict(
    name: str, encoder: torch.nn.Module, prefixes: Mapping[str, str]
) -> dict[str, torch.Tensor]:
    """A peft-adapted CLIP text encoder's kohya keys; `name` is its pipeline component name, `prefixes` the
    family's kohya prefix per component."""
    if name not in prefixes:
        raise ValueError(f"text encoder {name!r}: the kohya layout names only {sorted(prefixes)} for this model")
    if ADAPTER not in (getattr(encoder, "peft_config", None) or {}):
        raise ValueError(f"text encoder {name!r} has no LoRA adapter")
    return single_file_state_dict(encoder, lambda module: kohya_name(text_model_path(module), prefixes[name]))


def peft_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(model, adapter_name=ADAPTER)


def network_metadata(model: Any, version: str, architecture: str, implementation: str, title: str) -> dict[str, str]:
    """The `ss_*` and `modelspec.*` entries that the UIs read to show and check a LoRA."""
    config = model.peft_config[ADAPTER]
    targets = sorted(config.target_modules)
    if isinstance(config, LoraConfig):
        module, alpha = "networks.lora", config.lora_alpha
        args: dict[str, Any] = {"target_modules": targets, "dora": bool(config.use_dora)}
    else:  # LoKr or LoHa, named as kohya's sd-scripts names LyCORIS networks
        module, alpha = "lycoris.kohya", config.alpha
        args = {"algo": str(config.peft_type.value).lower(), "target_modules": targets}
        if isinstance(config, LoKrConfig):
            args.update(factor=config.decompose_factor, decompose_both=config.decompose_both)
    return {
        "ss_network_module": module,
        "ss_network_dim": str(config.r),
        "ss_network_alpha": str(float(alpha)),
        "ss_network_args": json.dumps(args),
        "ss_base_model_version": version,
        "ss_output_name": title,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture,
        "modelspec.implementation": implementation,
        "modelspec.title": title,
    }


def folded_state_dict(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """A peft adapter in the diffusers key layout (`<prefix><module>.lora_A.weight` / `.lora_B.weight`) with each
    module's scale (alpha / rank) folded into lora_B: readers that find no alpha scale by 1 (ComfyUI) or take
    alpha = rank (diffusers without metadata), so every reader applies exactly the trained update."""
    if any(isinstance(module, LycorisLayer) for module in model.modules()):
        raise UnsupportedAdapterError(
            "a LoKr/LoHa adapter on a transformer base has no single-file layout artlora can check against a "
            "reader (ComfyUI's names for these bases are LoRA's); use the diffusers-layout file"
        )
    alphas = module_alphas(model)
    ranks = {
        path: module.r[ADAPTER]
        for path, module in model.named_modules()
        if isinstance(module, LoraLayer) and ADAPTER in module.r
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in peft_state(model).items():
        value = value.detach().float().cpu().contiguous()
        if key.endswith(".lora_A.weight"):
            out[prefix + key] = value
        elif key.endswith(".lora_B.weight"):
            module = key.removesuffix(".lora_B.weight")
            out[prefix + key] = (value * (alphas[module] / ranks[module])).contiguous()
        elif key.endswith(_MAGNITUDE):
            raise UnsupportedAdapterError(
                "a DoRA adapter has no faithful single-file form for the UIs (they read magnitudes per input "
                "channel, peft trains them per output channel); use the diffusers-layout file"
            )
        else:
            raise UnsupportedAdapterError(f"the single-file layout has no key for adapter weight {key!r}")
    return out
