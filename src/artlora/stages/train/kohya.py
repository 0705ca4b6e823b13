"""The adapter as one safetensors file in the kohya-ss key layout, the one AUTOMATIC1111, Forge, ComfyUI,
InvokeAI and diffusers' `load_lora_weights` all read.

Keys. Each LoRA module is one name with `.lora_down.weight` (peft's lora_A), `.lora_up.weight` (lora_B) and an
`.alpha` scalar; every reader scales the update by alpha / rank, as peft does. diffusers' own
`convert_state_dict_to_kohya` writes alpha = rank (wrong whenever alpha != rank); hence this module.
- SD 1.x/2.x UNet: kohya trains on the diffusers UNet, so names are diffusers paths with `_` for `.`:
  `lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q`.
- SDXL UNet: kohya trains on the original (SGM, "ldm") UNet, so names are its paths: `input_blocks.N.0` is a
  ResNet (conv1 -> in_layers.2, conv2 -> out_layers.3, conv_shortcut -> skip_connection, time_emb_proj ->
  emb_layers.1), `input_blocks.N.1` its transformer, `input_blocks.N.0.op` a downsampler, `middle_block.0/1/2`
  the mid ResNet/transformer/ResNet, `output_blocks.N.K.conv` an upsampler. The numbering follows from the
  UNet's config (layers_per_block, which up blocks have attention), so the tiny SDXL maps as the real one does.
- text encoders: `lora_te_` (SD 1.x/2.x) or `lora_te1_`/`lora_te2_` (SDXL's two) + the Hugging Face CLIP path
  `text_model.encoder.layers.0.self_attn.q_proj` with `_` for `.`.

How the readers take it: AUTOMATIC1111/Forge and ComfyUI match these names against their own SGM/ldm modules
(SD 1.x/2.x diffusers names through a fixed diffusers->ldm table) and add up @ down * alpha / rank to the weight;
diffusers' `load_lora_weights` renames them back (`_maybe_map_sgm_blocks_to_diffusers` with the pipeline's UNet
config, then `_convert_non_diffusers_lora_to_diffusers`), which is what the tests check against.

Refused (`UnsupportedAdapterError`), because no file in this layout would give the trained model's images:
- DoRA: peft's DoRA normalises each output channel, while the `dora_scale` of kohya-layout files is read by
  AUTOMATIC1111 as a per-input-channel magnitude (LyCORIS's default) and dropped by diffusers. DoRA adapters
  ship in the diffusers layout only.
- SDXL layouts that diffusers' SGM reader misnumbers: per-block `layers_per_block` (it takes one number), an
  upsampler in an up block without attention (kohya's `output_blocks.N.1.conv`, which diffusers files under
  `attentions`; real and tiny SDXL upsample only in attention blocks), and both block N and block N0-N9 carrying
  LoRA keys (it gathers `input_blocks_1` by substring, so it also takes block 10's keys; SDXL has 9 per side).
- LoRA biases and LoRA on embeddings, which kohya's format has no keys for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from artlora.diffusion.architecture import is_sdxl

if TYPE_CHECKING:  # Any to mypy (pyproject.toml): its config and peft_config are read here
    from diffusers import ModelMixin

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


def module_alphas(model: torch.nn.Module) -> dict[str, float]:
    """Each LoRA module's alpha such that alpha / rank is peft's scaling (rsLoRA's alpha / sqrt(rank) too)."""
    alphas = {}
    for path, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_alpha:
            alpha, rank = module.lora_alpha[ADAPTER], module.r[ADAPTER]
            alphas[path] = alpha * math.sqrt(rank) if module.use_rslora.get(ADAPTER) else alpha
    return alphas


# -- SDXL: the original (SGM) UNet's paths -----------------------------------------------------------------

_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TOP_LEVEL = (
    ("conv_in", "input_blocks.0.0"),
    ("time_embedding.linear_1", "time_embed.0"),
    ("time_embedding.linear_2", "time_embed.2"),
    ("add_embedding.linear_1", "label_emb.0.0"),
    ("add_embedding.linear_2", "label_emb.0.2"),
    ("conv_norm_out", "out.0"),
    ("conv_out", "out.2"),
)


def _layers_per_block(config) -> int:
    layers = config.layers_per_block
    if not isinstance(layers, int):
        raise UnsupportedAdapterError(
            f"layers_per_block {layers} differs per block; the original UNet numbering that kohya and diffusers' "
            "reader use assumes one number"
        )
    return layers


def _entry(kind: str, rest: list[str], path: str) -> tuple[int, str]:
    """A block entry's slot and the path below it: (0, ResNet part) or (1, transformer path)."""
    if kind == "attentions" and rest:
        return 1, ".".join(rest)
    if kind == "resnets" and rest and rest[0] in _RESNET_PARTS:
        return 0, ".".join([_RESNET_PARTS[rest[0]], *rest[1:]])
    raise UnsupportedAdapterError(f"no original-UNet name for {path!r}")


def sgm_path(path: str, config) -> str:
    """A diffusers UNet module or parameter path -> the original (SGM/ldm) UNet's path, numbered from the config:
    `down_blocks.1.attentions.0.proj_in` -> `input_blocks.4.1.proj_in` for SDXL (2 layers per block)."""
    for diffusers_path, original in _TOP_LEVEL:
        if path == diffusers_path or path.startswith(diffusers_path + "."):
            return original + path[len(diffusers_path) :]
    parts = path.split(".")
    if parts[0] == "mid_block" and len(parts) > 3:
        kind, index = parts[1], int(parts[2])
        slot, below = _entry(kind, parts[3:], path)
        return f"middle_block.{2 * index + slot}.{below}"  # resnet, transformer, resnet
    if parts[0] not in ("down_blocks", "up_blocks") or len(parts) < 5:
        raise UnsupportedAdapterError(f"no original-UNet name for {path!r}")
    per_block = _layers_per_block(config)
    stride = per_block + 1  # each level's entries: its layers, then one holding its down/upsampler
    block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
    if parts[0] == "down_blocks":
        if kind == "downsamplers" and rest[0] == "conv":
            return ".".join([f"input_blocks.{1 + block * stride + per_block}.0.op", *rest[1:]])
        slot, below = _entry(kind, rest, path)
        return f"input_blocks.{1 + block * stride + index}.{slot}.{below}"
    if kind == "upsamplers" and rest[0] == "conv":
        slot = 2 if "CrossAttn" in config.up_block_types[block] else 1  # after the resnet (and transformer)
        return ".".join([f"output_blocks.{block * stride + per_block}.{slot}.conv", *rest[1:]])
    slot, below = _entry(kind, rest, path)
    return f"output_blocks.{block * stride + index}.{slot}.{below}"


def _check_diffusers_reads(paths: Iterable[str]) -> None:
    """Refuse SGM names that diffusers' reader would misfile (see the module docstring)."""
    paths = list(paths)
    for path in paths:
        parts = path.split(".")
        if parts[0] == "output_blocks" and parts[2:4] == ["1", "conv"]:
            raise UnsupportedAdapterError(
                f"{path}: an upsampler in an up block without attention, which diffusers' SGM reader takes for "
                "a transformer; leave out upsamplers.0.conv or use the diffusers-layout file"
            )
    for side in ("input_blocks", "output_blocks"):
        used = {path.split(".")[1] for path in paths if path.startswith(side + ".")}
        clashes = sorted(f"{a}/{b}" for a in used for b in used if a != b and b.startswith(a))
        if clashes:
            raise UnsupportedAdapterError(
                f"{side} {clashes[0]} both carry LoRA keys: diffusers' SGM reader gathers a block's keys by "
                "prefix and mixes them up; use the diffusers-layout file"
            )


# -- the file ------------------------------------------------------------------------------------------------


def unet_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The UNet adapter's kohya keys: diffusers paths for SD 1.x/2.x, original-UNet paths for SDXL."""
    peft_state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    if not is_sdxl(unet):
        return kohya_state_dict(peft_state, module_alphas(unet))
    modules = {key.rsplit(".lora_", 1)[0] for key in peft_state if ".lora_" in key}
    _check_diffusers_reads(sgm_path(module, unet.config) for module in modules)
    return kohya_state_dict(peft_state, module_alphas(unet), lambda module: kohya_name(sgm_path(module, unet.config)))


def _text_model_path(path: str) -> str:
    """transformers >= 5.6 drops CLIPTextModel's `text_model.` level; kohya names (and every reader) keep it."""
    return path if path.startswith(("text_model.", "text_projection")) else "text_model." + path


def text_encoder_state_dict(name: str, encoder: torch.nn.Module, sdxl: bool) -> dict[str, torch.Tensor]:
    """A peft-adapted CLIP text encoder's kohya keys; `name` is its pipeline component name."""
    prefixes = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"} if sdxl else {"text_encoder": "lora_te_"}
    if name not in prefixes:
        raise ValueError(f"text encoder {name!r}: the kohya layout names only {sorted(prefixes)} for this model")
    if ADAPTER not in (getattr(encoder, "peft_config", None) or {}):
        raise ValueError(f"text encoder {name!r} has no LoRA adapter")
    peft_state = get_peft_model_state_dict(encoder, adapter_name=ADAPTER)
    return kohya_state_dict(
        peft_state, module_alphas(encoder), lambda module: kohya_name(_text_model_path(module), prefixes[name])
    )


# The origin of the key names, as kohya writes it: SGM (Stability AI's code) paths for SDXL, diffusers paths else.
_SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


def architecture(unet: ModelMixin, prediction_type: str) -> tuple[str, str]:
    """(kohya's ss_base_model_version, the model spec's architecture) of the base model."""
    if is_sdxl(unet):
        return "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"
    # SD 2.x projects into and out of attention with linear layers, SD 1.x with 1x1 convolutions.
    if unet.config.use_linear_projection:
        return "sd_v2", "stable-diffusion-v2-768-v/lora" if prediction_type == "v_prediction" else (
            "stable-diffusion-v2-512/lora"
        )
    return "sd_v1", "stable-diffusion-v1/lora"


def kohya_metadata(unet: ModelMixin, prediction_type: str, title: str) -> dict[str, str]:
    """The `ss_*` and `modelspec.*` entries that the UIs read to show and check a LoRA."""
    config = unet.peft_config[ADAPTER]
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
        "modelspec.implementation": _SGM_IMPLEMENTATION if is_sdxl(unet) else "diffusers",
        "modelspec.title": title,
    }


def save_kohya(
    unet: torch.nn.Module,
    path: str | Path,
    prediction_type: str,
    metadata: Mapping[str, str] | None = None,
    text_encoders: Mapping[str, torch.nn.Module] | None = None,
) -> Path:
    """Write the UNet's LoRA adapter, and those of `text_encoders` (pipeline component name -> peft-adapted CLIP
    model: "text_encoder", and for SDXL "text_encoder_2"), to `path` in the kohya layout, with kohya's and our
    metadata. Nothing is written when any part cannot be expressed."""
    path = Path(path)
    tensors = unet_state_dict(unet)
    for name, encoder in (text_encoders or {}).items():
        tensors.update(text_encoder_state_dict(name, encoder, is_sdxl(unet)))
    entries = {"format": "pt", **kohya_metadata(unet, prediction_type, path.stem), **(metadata or {})}
    save_file(tensors, path, metadata=entries)
    return path
