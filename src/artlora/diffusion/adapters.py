"""A trained LoRA adapter on a loaded pipeline, as evaluate measures it, register compares it and generate paints
with it: diffusers' `load_lora_weights`, every module in eval mode (generate sets the strength as the adapter's
weight).

Eval mode matters: diffusers attaches the loaded LoRA layers in training mode, so an adapter file whose metadata
carries a dropout rate (as files from other trainers do) would drop activations at random in every image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE
from safetensors import safe_open

from artlora import contracts
from artlora.data.latents import LatentSet
from artlora.diffusion import families, lycoris
from artlora.diffusion.heldout import HeldoutLoss, heldout_loss_by_style
from artlora.errors import ArtloraError

# The file name diffusers gives an adapter in its own layout; any other .safetensors in an adapter folder is the
# kohya-layout copy the train stage writes beside it.
DIFFUSERS_FILE = LORA_WEIGHT_NAME_SAFE
ADAPTER_NAME = "style"


class AdapterError(ArtloraError):
    """An adapter folder without the file asked for."""


def read_metadata(path: str | Path, prefix: str = contracts.METADATA_PREFIX) -> dict[str, str]:
    """A safetensors file's metadata entries whose keys start with `prefix` (all of them for "")."""
    with safe_open(str(path), framework="pt") as handle:
        return {k: v for k, v in (handle.metadata() or {}).items() if k.startswith(prefix)}


def adapter_file(folder: str | Path, layout: str = "diffusers") -> Path:
    """The adapter file of a folder in the given layout ("diffusers" or "kohya")."""
    folder = Path(folder)
    if layout == "diffusers":
        path = folder / DIFFUSERS_FILE
        if not path.is_file():
            raise AdapterError(f"no {DIFFUSERS_FILE} in {folder} (give an adapter folder written by the train stage)")
        return path
    others = sorted(p for p in folder.glob("*.safetensors") if p.name != DIFFUSERS_FILE)
    if not others:
        raise AdapterError(
            f"no kohya-layout file in {folder}, as for DoRA adapters, LoKr/LoHa on SD 3.5 and Flux.1 and layouts "
            "kohya's format cannot express (use the diffusers layout)"
        )
    return others[0]


def adapter_digest(folder: str | Path) -> str:
    """The content digest of an adapter: its diffusers-layout tensors (names, dtypes, shapes, values). The
    file's metadata (run id, config) and the kohya copy, which holds the same weights, are left out, so the
    same weights trained again give the same digest."""
    content = hashlib.sha256()
    with safe_open(str(adapter_file(folder)), framework="pt") as handle:
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name).contiguous()
            content.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
            content.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return content.hexdigest()[:32]


def load_adapter(pipe, path: str | Path) -> None:
    """Load an adapter file (either layout) into `pipe` as the adapter ADAPTER_NAME at full strength (its weight,
    which `pipe.set_adapters` changes), then put every module of the pipeline in eval mode: LoRA dropout off.
    LoKr and LoHa adapters (which diffusers' `load_lora_weights` does not read) load from their diffusers-layout
    file through peft (`lycoris.load`)."""
    path = Path(path)
    if lycoris.kind(path) is not None:
        lycoris.load(pipe, path, ADAPTER_NAME)
    else:
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=ADAPTER_NAME)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()


def read_by_adapter(pipe, data: LatentSet) -> LatentSet:
    """The data's caption states as the pipeline's text encoders read them now: encoded again when the loaded
    adapter changed a text encoder too, else as cached."""
    encoders = families.of(pipe).text_encoders(pipe)
    if any(getattr(encoder, "peft_config", None) for encoder in encoders.encoders):
        return data.reencoded(encoders.encode_captions)
    return data


def heldout_losses(
    pipe, scheduler, data: LatentSet, adapter: str | Path, timesteps: tuple[int, ...], seed: int
) -> tuple[HeldoutLoss, HeldoutLoss]:
    """The held-out loss (overall and per style) of the base model, then of base + adapter, on the same data,
    timesteps and noise."""
    family = families.of(pipe)
    denoiser = getattr(pipe, family.denoiser)
    base = heldout_loss_by_style(family, denoiser, scheduler, data, timesteps, seed)
    load_adapter(pipe, adapter)
    return base, heldout_loss_by_style(family, denoiser, scheduler, read_by_adapter(pipe, data), timesteps, seed)
