"""Training-objective parts every family shares: noise offset, the (weighted) squared or pseudo-Huber error and
the LPIPS perceptual term. The target, its weights and the x0 a prediction implies are each family's
(`diffusion.families`)."""

from __future__ import annotations

import lpips
import torch
from diffusers import AutoencoderKL

from artlora.diffusion.vae import decode_latents


def offset_noise(noise: torch.Tensor, offset: float, generator: torch.Generator) -> torch.Tensor:
    """Noise plus a random constant per sample and channel (Guttenberg's noise offset); drawn on the CPU."""
    shift = torch.randn((noise.shape[0], noise.shape[1], 1, 1), generator=generator)
    return noise + offset * shift.to(noise.device, noise.dtype)


def weighted_mse(output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error in fp32; with weights, each sample's mean error is weighted first."""
    return weighted_loss(output, target, weights)


def elementwise_error(
    output: torch.Tensor, target: torch.Tensor, loss: str = "mse", huber_delta: float = 0.1
) -> torch.Tensor:
    """Each element's error in fp32: squared (`mse`), or pseudo-Huber (`huber`) as kohya's sd-scripts and
    SimpleTuner compute it, 2 delta (sqrt(e^2 + delta^2) - delta): e^2 where |e| is well below delta (the
    squared error's scale, so learning rates carry over), 2 delta |e| - 2 delta^2 far above it."""
    output, target = output.float(), target.float()
    if loss == "huber":
        return 2 * huber_delta * (torch.sqrt((output - target) ** 2 + huber_delta**2) - huber_delta)
    return torch.nn.functional.mse_loss(output, target, reduction="none")


def weighted_loss(
    output: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    loss: str = "mse",
    huber_delta: float = 0.1,
) -> torch.Tensor:
    """The mean of `elementwise_error`; with weights, each sample's mean error is weighted first."""
    error = elementwise_error(output, target, loss, huber_delta)
    if weights is None:
        return error.mean()
    return (error.mean(dim=tuple(range(1, error.ndim))) * weights).mean()


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
        return decode_latents(self.vae, latents)

    def forward(self, predicted_latents: torch.Tensor, target_latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.decode(target_latents)
        return self.lpips(self.decode(predicted_latents), target).float().mean()
