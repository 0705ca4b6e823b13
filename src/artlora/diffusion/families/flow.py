"""The foundation of the flow-matching families (SD 3.5, Flux.1): rectified flow as SD3 trains it.

A timestep t in [0, 1000) stands for sigma = t / 1000; x_t = (1 - sigma) x0 + sigma noise and the model predicts
the velocity noise - x0, so x0 = x_t - sigma * output. Training draws u from a density over (0, 1)
(`compute_density_for_timestep_sampling`: logit-normal, mode or uniform), biases it if asked (`train.timestep_bias`)
and shifts it as the base's scheduler shifts its sigmas: a fixed `shift` (SD 3.5: 3.0), or with
`use_dynamic_shifting` (Flux.1) the resolution-dependent mu of `calculate_shift` over the latent's token count.
Loss weights are `compute_loss_weighting_for_sd3`'s. The held-out loss uses its fixed timesteps unshifted
(sigma = t / 1000), so runs compare whatever their density.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from artlora.config import ConfigError
from artlora.diffusion.families.base import NO_OPTIONS, Family, bias_toward_noise

TIMESTEPS = 1000


def calculate_shift(tokens: int, config) -> float:
    """Flux's mu: linear in the latent's token count, from `base_shift` at `base_image_seq_len` to `max_shift` at
    `max_image_seq_len` (diffusers' `calculate_shift`, with the scheduler's settings)."""
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    return config.base_shift + slope * (tokens - config.base_image_seq_len)


def shift_sigmas(scheduler, sigmas: torch.Tensor, tokens: int) -> torch.Tensor:
    """Sigmas shifted as the scheduler shifts its own: exponential time shift by mu(tokens) when it shifts by
    resolution, else shift * s / (1 + (shift - 1) * s)."""
    config = scheduler.config
    if config.use_dynamic_shifting:
        mu = calculate_shift(tokens, config)
        return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    return config.shift * sigmas / (1 + (config.shift - 1) * sigmas)


def sigmas_of(timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """sigma = t / 1000, shaped to broadcast over latents like `like`."""
    return (timesteps.to(like.device, torch.float32) / TIMESTEPS).view(-1, *([1] * (like.ndim - 1)))


class FlowFamily(Family):
    denoiser: ClassVar[str] = "transformer"
    cached_text: ClassVar[tuple[str, ...]] = ("hidden", "pooled")
    lora_scale_argument: ClassVar[str] = "joint_attention_kwargs"
    patch: ClassVar[int] = 2  # latent pixels per token side

    def check_config(self, config) -> None:
        if config.min_snr_gamma:
            raise ConfigError(
                f"train.min_snr_gamma: min-SNR weighting is for the UNet families; {self.label} trains with flow "
                "matching (set it to null, and use train.loss_weighting / timestep_density instead)"
            )
        if config.train_text_encoder:
            raise ConfigError(
                f"train.train_text_encoder: artlora trains no text-encoder LoRA for {self.label} (its captions come "
                "from the text cache); set it to false"
            )

    def load_options(self, text=NO_OPTIONS) -> dict[str, Any]:
        # Their transformers are the big part (Flux.1: 12 B parameters, 48 GB in fp32): augment leaves it out. The
        # UNet families keep theirs (small, and their pipelines read its config when built).
        return {**super().load_options(text), **({} if text.denoiser else {self.denoiser: None})}

    def training_scheduler(self, pipe) -> FlowMatchEulerDiscreteScheduler:
        return FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)

    def sample_timesteps(self, scheduler, shape: torch.Size, generator: torch.Generator, config) -> torch.Tensor:
        u = compute_density_for_timestep_sampling(
            config.timestep_density,
            shape[0],
            logit_mean=config.logit_mean,
            logit_std=config.logit_std,
            mode_scale=config.mode_scale,
            generator=generator,
        )
        # Away from 0 and 1: sigma = 0 trains nothing, and the shift divides by u.
        u = bias_toward_noise(u, config).clamp(1e-5, 1 - 1e-5)
        tokens = (shape[-2] // self.patch) * (shape[-1] // self.patch)
        return shift_sigmas(scheduler, u, tokens) * TIMESTEPS

    def add_noise(self, scheduler, latents, noise, timesteps) -> torch.Tensor:
        sigmas = sigmas_of(timesteps, latents)
        return ((1 - sigmas) * latents.float() + sigmas * noise.float()).to(latents.dtype)

    def target(self, scheduler, latents, noise, timesteps) -> torch.Tensor:
        return noise - latents

    def loss_weights(self, scheduler, timesteps: torch.Tensor, config) -> torch.Tensor | None:
        if config.loss_weighting == "none":
            return None
        sigmas = timesteps.float() / TIMESTEPS
        return compute_loss_weighting_for_sd3(config.loss_weighting, sigmas)

    def predicted_x0(self, scheduler, noisy, output, timesteps) -> torch.Tensor:
        return noisy.float() - sigmas_of(timesteps, noisy) * output.float()

    def heldout_timesteps(self, scheduler, timestep: int, count: int) -> torch.Tensor:
        return torch.full((count,), float(timestep))
