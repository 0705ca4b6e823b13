"""The foundation of the UNet families (SD 1.x/2.x, SDXL): DDPM noising under Stable Diffusion's schedule, the
epsilon or velocity target as the scheduler says, min-SNR-gamma weights, integer timesteps drawn uniformly (or
biased toward high or low noise, `train.timestep_bias`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import compute_snr

from artlora.config import ConfigError
from artlora.diffusion.families.base import Family, bias_toward_noise
from artlora.errors import ArtloraError

# Train settings of the flow-matching objective, which the UNet families' objective has no use for.
FLOW_SETTINGS = ("timestep_density", "logit_mean", "logit_std", "mode_scale", "loss_weighting")


class UnsupportedObjective(ArtloraError):
    """The base model's scheduler asks for a training target artlora does not train."""


def diffusion_target(scheduler: DDPMScheduler, latents, noise, timesteps) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon models) or the velocity (v-prediction models)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise UnsupportedObjective(
        f"the base model's scheduler predicts {kind!r}: artlora trains epsilon and v_prediction models "
        "(use such a base)"
    )


def min_snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights of min-SNR-gamma (Hang et al., 2023), for the model's prediction type.

    The weight on the x0 error is min(SNR, gamma); expressed on the epsilon error that is min(SNR, gamma) / SNR,
    on the velocity error min(SNR, gamma) / (SNR + 1). SNR = alpha_bar / (1 - alpha_bar), by diffusers'
    `compute_snr` (fp32), as diffusers' training examples weight.
    """
    ratio = compute_snr(scheduler, timesteps)
    clipped = ratio.clamp(max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (ratio + 1)
    return clipped / ratio


def predicted_x0(scheduler: DDPMScheduler, noisy, model_output, timesteps) -> torch.Tensor:
    """The clean latent implied by the UNet's output at each sample's timestep (fp32)."""
    noisy, model_output = noisy.float(), model_output.float()
    alpha_bar = scheduler.alphas_cumprod.to(noisy.device, torch.float32)[timesteps].view(-1, 1, 1, 1)
    signal, noise_scale = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if scheduler.config.prediction_type == "v_prediction":
        return signal * noisy - noise_scale * model_output
    return (noisy - noise_scale * model_output) / signal


class UNetFamily(Family):
    denoiser: ClassVar[str] = "unet"
    # Named groups of UNet layers.
    target_groups: ClassVar[dict[str, tuple[str, ...]]] = {
        "attention": ("to_q", "to_k", "to_v", "to_out.0"),
        "feed_forward": ("ff.net.0.proj", "ff.net.2"),
        "convolutions": ("conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv"),
    }

    def check_config(self, config) -> None:
        # Compared with the defaults, not by which fields were set: a saved config sets every field.
        fields = type(config).model_fields
        given = [name for name in FLOW_SETTINGS if getattr(config, name) != fields[name].default]
        if given:
            raise ConfigError(
                f"train.{given[0]}: a flow-matching setting (SD 3.5, Flux.1), but the base model is {self.label}, "
                "which draws timesteps uniformly (remove it, or use min_snr_gamma)"
            )

    def training_scheduler(self, pipe) -> DDPMScheduler:
        return DDPMScheduler.from_config(pipe.scheduler.config)

    def sample_timesteps(self, scheduler, shape: torch.Size, generator: torch.Generator, config) -> torch.Tensor:
        count = scheduler.config.num_train_timesteps
        if config.timestep_bias == "none":  # as before the bias existed: the same draws from the same generator
            return torch.randint(0, count, (shape[0],), generator=generator)
        u = bias_toward_noise(torch.rand(shape[0], generator=generator), config)
        return (u * count).long().clamp(0, count - 1)

    def add_noise(self, scheduler, latents, noise, timesteps) -> torch.Tensor:
        return scheduler.add_noise(latents, noise, timesteps)

    def target(self, scheduler, latents, noise, timesteps) -> torch.Tensor:
        return diffusion_target(scheduler, latents, noise, timesteps)

    def loss_weights(self, scheduler, timesteps: torch.Tensor, config) -> torch.Tensor | None:
        return min_snr_weights(scheduler, timesteps, config.min_snr_gamma) if config.min_snr_gamma else None

    def predicted_x0(self, scheduler, noisy, output, timesteps) -> torch.Tensor:
        return predicted_x0(scheduler, noisy, output, timesteps)

    def heldout_timesteps(self, scheduler, timestep: int, count: int) -> torch.Tensor:
        return torch.full((count,), timestep, dtype=torch.long)

    def predict(self, model, noisy, timesteps, text, conditioning: Mapping[str, torch.Tensor]) -> torch.Tensor:
        added = dict(conditioning) or None
        return model(noisy, timesteps, text, added_cond_kwargs=added).sample

    def owns(self, denoiser: torch.nn.Module) -> bool:
        return isinstance(denoiser, UNet2DConditionModel)
