"""A trained LoRA adapter on a loaded pipeline, as evaluate measures it, register compares it and generate paints
with it: diffusers' `load_lora_weights`, every module in eval mode (generate sets the strength as the adapter's
weight).

Eval mode matters: diffusers attaches the loaded LoRA layers in training mode, so an adapter file whose metadata
carries a dropout rate (as files from other trainers do) would drop activations at random in every image.
"""

from __future__ import annotations

from pathlib import Path

import torch

from artlora.data.latents import LatentSet
from artlora.diffusion import families, lycoris

# An adapter's files (`adapter_files`), named here too for the callers that load adapters.
from artlora.diffusion.adapter_files import DIFFUSERS_FILE as DIFFUSERS_FILE
from artlora.diffusion.adapter_files import AdapterError as AdapterError
from artlora.diffusion.adapter_files import adapter_digest as adapter_digest
from artlora.diffusion.adapter_files import adapter_file as adapter_file
from artlora.diffusion.adapter_files import read_metadata as read_metadata
from artlora.diffusion.heldout import HeldoutLoss, heldout_loss_by_style

ADAPTER_NAME = "style"


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
