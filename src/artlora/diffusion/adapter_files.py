"""A trained adapter's files, as the train stage writes them: which file holds which layout, its metadata and its
content digest. Torch and safetensors only, so that registering a version (which reads these) loads neither
diffusers nor peft; `adapters` loads an adapter into a pipeline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open

from artlora import contracts
from artlora.errors import ArtloraError

# The file name diffusers gives an adapter in its own layout; any other .safetensors in an adapter folder is the
# kohya-layout copy the train stage writes beside it.
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE (a test holds them equal)


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
