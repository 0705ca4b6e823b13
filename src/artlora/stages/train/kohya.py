"""The adapter as one safetensors file in the layout the UIs load (kohya-ss keys for SD 1.x/2.x and SDXL, which
AUTOMATIC1111, Forge, ComfyUI, InvokeAI and diffusers' `load_lora_weights` all read; the ComfyUI/kohya names of
the transformer families): the family names the keys and the metadata (`Family.single_file`), this module writes
the file. Adapters the layout cannot express are refused (`UnsupportedAdapterError`, `diffusion.lora_keys`)
before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from artlora.diffusion import families
from artlora.diffusion.lora_keys import UnsupportedAdapterError

__all__ = ["UnsupportedAdapterError", "save_kohya"]


def save_kohya(
    denoiser: torch.nn.Module,
    path: str | Path,
    prediction_type: str,
    metadata: Mapping[str, str] | None = None,
    text_encoders: Mapping[str, torch.nn.Module] | None = None,
) -> Path:
    """Write the denoiser's LoRA adapter, and those of `text_encoders` (pipeline component name -> peft-adapted
    text model), to `path` in the family's single-file layout, with its metadata and ours. Nothing is written
    when any part cannot be expressed."""
    path = Path(path)
    family = families.of_denoiser(denoiser)
    parts = {family.denoiser: denoiser, **(text_encoders or {})}
    tensors, entries = family.single_file(parts, prediction_type, path.stem)
    save_file(tensors, path, metadata={"format": "pt", **entries, **(metadata or {})})
    return path
