"""Base-model families: everything that differs between bases, behind one interface (`base.Family`).

Adding a family: one module here with a `Family` subclass, and one line in `FAMILIES`. Everything else (loading,
augment, train, evaluate, generate, the benchmarks) asks `of(pipe)`, `of_denoiser(module)` or `named(name)`.
"""

from __future__ import annotations

import torch

from artlora.diffusion.families.base import Family, TextOptions
from artlora.diffusion.families.flux import Flux
from artlora.diffusion.families.sd1 import SD1
from artlora.diffusion.families.sd3 import SD3
from artlora.diffusion.families.sdxl import SDXL
from artlora.errors import ArtloraError

# Asked in reverse order: the first one (SD 1.x/2.x) is the fallback for a base no other family claims.
FAMILIES: dict[str, Family] = {family.name: family for family in (SD1(), SDXL(), SD3(), Flux())}


class UnknownFamily(ArtloraError):
    """A family name that is not registered."""


def named(name: str) -> Family:
    if name not in FAMILIES:
        raise UnknownFamily(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def _asked() -> list[Family]:
    return list(reversed(FAMILIES.values()))


def of_denoiser(denoiser: torch.nn.Module) -> Family:
    """The family of a UNet or transformer (also one with a LoRA adapter attached)."""
    found = next((family for family in _asked() if family.owns(denoiser)), None)
    if found is None:
        raise UnknownFamily(f"no model family has a denoiser of class {type(denoiser).__name__}")
    return found


def of(pipe) -> Family:
    """The family of a loaded pipeline (or of anything with its denoiser as an attribute)."""
    for name in ("unet", "transformer"):
        denoiser = getattr(pipe, name, None)
        if isinstance(denoiser, torch.nn.Module):
            return of_denoiser(denoiser)
    if isinstance(pipe, torch.nn.Module):
        return of_denoiser(pipe)
    if hasattr(pipe, "components"):  # a pipeline loaded without its denoiser (augment): its class says
        return for_pipeline_name(type(pipe).__name__)
    raise UnknownFamily(f"{type(pipe).__name__} has no UNet or transformer")


def for_pipeline_name(class_name: str) -> Family:
    """The family of a model_index.json `_class_name`."""
    return next(family for family in _asked() if family.owns_pipeline_name(class_name))


def for_single_file(keys: list[str]) -> Family:
    """The family of an original-layout single-file checkpoint, from its tensor names."""
    return next(family for family in _asked() if family.owns_single_file(keys))


__all__ = [
    "FAMILIES",
    "Family",
    "TextOptions",
    "UnknownFamily",
    "for_pipeline_name",
    "for_single_file",
    "named",
    "of",
    "of_denoiser",
]
