"""How an image is painted, and the pyfunc's predict() parameters: light (no torch, no diffusers), so that
registering a version, which records the parameters with the logged model, loads no painter."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from artlora.errors import ArtloraError


class GenerateError(ArtloraError):
    """A request that cannot be painted as asked (e.g. half precision on a machine without a GPU)."""


@dataclass(frozen=True)
class Settings:
    """How one image is painted; with the prompt and seed, what its PNG records."""

    negative_prompt: str = ""
    strength: float = 1.0  # the adapter's weight: 0 is the base model, 1 the style as trained
    steps: int = 25
    guidance: float = 7.5


# The pyfunc's predict() parameters with their defaults (the i-th prompt is painted with seed + i).
PARAMS = {**asdict(Settings()), "seed": 0}


def check_size(name: str, pixels: int | None) -> None:
    """A width or height the VAE can halve three times: a positive multiple of 8 (None: the model's own)."""
    if pixels is not None and (pixels <= 0 or pixels % 8):
        raise GenerateError(f"{name} {pixels}: must be a positive multiple of 8 pixels (e.g. 512 or 768)")
