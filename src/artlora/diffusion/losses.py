"""Training objectives: the diffusion target, min-SNR weights, predicted x0, and the LPIPS perceptual term."""

from __future__ import annotations

import lpips
import torch
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.training_utils import compute_snr

from artlora.errors import ArtloraError


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


def offset_noise(noise: torch.Tensor, offset: float, generator: torch.Generator) -> torch.Tensor:
    """Noise plus a random constant per sample and channel (Guttenberg's noise offset); drawn on the CPU."""
    shift = torch.randn((noise.shape[0], noise.shape[1], 1, 1), generator=generator)
    return noise + offset * shift.to(noise.device, noise.dtype)


def weighted_mse(output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error in fp32; with weights, each sample's mean error is weighted first."""
    error = torch.nn.functional.mse_loss(output.float(), target.float(), reduction="none")
    if weights is None:
        return error.mean()
    return (error.mean(dim=tuple(range(1, error.ndim))) * weights).mean()


def predicted_x0(scheduler: DDPMScheduler, noisy, model_output, timesteps) -> torch.Tensor:
    """The clean latent implied by the UNet's output at each sample's timestep (fp32)."""
    noisy, model_output = noisy.float(), model_output.float()
    alpha_bar = scheduler.alphas_cumprod.to(noisy.device, torch.float32)[timesteps].view(-1, 1, 1, 1)
    signal, noise_scale = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if scheduler.config.prediction_type == "v_prediction":
        return signal * noisy - noise_scale * model_output
    return (noisy - noise_scale * model_output) / signal


def perceptual_subset(timesteps: torch.Tensor, max_timestep: int, limit: int | None) -> torch.Tensor:
    """Indices of the samples that get the perceptual term: timestep below the maximum, at most `limit`."""
    chosen = torch.nonzero(timesteps < max_timestep).flatten()
    return chosen if limit is None else chosen[:limit]


class PerceptualLoss(torch.nn.Module):
    """LPIPS between the image decoded from the predicted x0 and the image decoded from the clean latent.

    `scale` < 1 resizes both latents before the VAE decode: the decode and LPIPS cost fall with the square of it.
    """

    def __init__(self, vae: AutoencoderKL, net: str, backbone: str, scale: float = 1.0):
        super().__init__()
        self.vae, self.scale = vae, scale
        # pretrained=True loads LPIPS's own calibration layers (shipped with the package); the backbone is
        # torchvision's ImageNet network, downloaded on first use unless 'random' is asked for (offline tests).
        self.lpips = lpips.LPIPS(pretrained=True, net=net, pnet_rand=backbone == "random", verbose=False)
        self.lpips.requires_grad_(False)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.scale < 1:
            size = [max(1, round(side * self.scale)) for side in latents.shape[-2:]]
            latents = torch.nn.functional.interpolate(latents, size=size, mode="bilinear", antialias=True)
        latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        return self.vae.decode(latents).sample.clamp(-1, 1)

    def forward(self, predicted_latents: torch.Tensor, target_latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.decode(target_latents)
        return self.lpips(self.decode(predicted_latents), target).float().mean()
