"""Training objectives: the diffusion target, predicted x0, and the LPIPS perceptual term."""

from __future__ import annotations

import lpips
import torch
from diffusers import AutoencoderKL, DDPMScheduler


def diffusion_target(scheduler: DDPMScheduler, latents, noise, timesteps) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon models) or the velocity (v-prediction models)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r} in the base model's scheduler")


def predicted_x0(scheduler: DDPMScheduler, noisy, model_output, timesteps) -> torch.Tensor:
    """The clean latent implied by the UNet's output at each sample's timestep."""
    alpha_bar = scheduler.alphas_cumprod.to(noisy.device, noisy.dtype)[timesteps].view(-1, 1, 1, 1)
    signal, noise_scale = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if scheduler.config.prediction_type == "v_prediction":
        return signal * noisy - noise_scale * model_output
    return (noisy - noise_scale * model_output) / signal


class PerceptualLoss(torch.nn.Module):
    """LPIPS between the image decoded from the predicted x0 and the image decoded from the clean latent."""

    def __init__(self, vae: AutoencoderKL, net: str, backbone: str):
        super().__init__()
        self.vae = vae
        # pretrained=True loads LPIPS's own calibration layers (shipped with the package); the backbone is
        # torchvision's ImageNet network, downloaded on first use unless 'random' is asked for (offline tests).
        self.lpips = lpips.LPIPS(pretrained=True, net=net, pnet_rand=backbone == "random", verbose=False)
        self.lpips.requires_grad_(False)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    def forward(self, predicted_latents: torch.Tensor, target_latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.decode(target_latents)
        return self.lpips(self.decode(predicted_latents), target).mean()
