"""Training latents from pixels and back: the VAE's posterior mean, shifted and scaled by the factors in its
config (`shift_factor` is set by SD 3.5's and Flux's VAEs; SD 1.x/2.x and SDXL have none)."""

from __future__ import annotations

import torch


def _shift(vae) -> float:
    return getattr(vae.config, "shift_factor", None) or 0.0


def encode_latents(vae, pixels: torch.Tensor) -> torch.Tensor:
    """The latents the denoiser trains on, for pixels in [-1, 1] on the VAE's device and dtype."""
    mean = vae.encode(pixels).latent_dist.mean
    shift = _shift(vae)
    return (mean - shift) * vae.config.scaling_factor if shift else mean * vae.config.scaling_factor


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] from training latents."""
    latents = latents.to(vae.dtype) / vae.config.scaling_factor + _shift(vae)
    return vae.decode(latents).sample.clamp(-1, 1)
