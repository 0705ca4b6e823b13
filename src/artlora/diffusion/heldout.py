"""The held-out denoising loss: what train validates with and evaluate reports, measured the same way.

Every validation view is noised at each of a fixed set of timesteps with noise fixed by the seed, so two numbers
(base and LoRA, one run and another) are directly comparable.
"""

from __future__ import annotations

import logging

import torch
from diffusers import DDPMScheduler

from artlora.data.latent_cache import load_split
from artlora.data.latents import LatentSet
from artlora.diffusion.losses import diffusion_target

log = logging.getLogger(__name__)


@torch.no_grad()
def heldout_loss(unet, scheduler: DDPMScheduler, data: LatentSet, timesteps: tuple[int, ...], seed: int) -> float:
    """Mean MSE over every validation view at each fixed timestep, with noise fixed by the seed."""
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for group in data.groups:
        noise = torch.randn(group.latents.shape, generator=gen)
        for t in timesteps:
            for chunk in torch.arange(len(group)).split(32):
                latents, steps = group.latents[chunk], torch.full((len(chunk),), t, dtype=torch.long)
                noisy = scheduler.add_noise(latents, noise[chunk], steps)
                added = group.added_cond(chunk)  # SDXL's pooled embeds and time ids; None for SD 1.x/2.x
                extra = {} if added is None else {"added_cond_kwargs": added}
                output = unet(noisy, steps, group.text[chunk], **extra).sample
                target = diffusion_target(scheduler, latents, noise[chunk], steps)
                total += torch.nn.functional.mse_loss(output, target, reduction="sum").item()
                count += target.numel()
    return total / count


def heldout_metrics(base: float, lora: float) -> dict[str, float]:
    """The held-out losses under the names evaluate logs them and register compares them by."""
    return {"val_loss_base": base, "val_loss_lora": lora, "val_loss_delta": lora - base}


def validation_data(cache_uri: str) -> LatentSet:
    """The validation split's first view per image; the training split if there is none (with a warning)."""
    try:
        return load_split(cache_uri, "val", views=1)
    except ValueError:
        log.warning("no validation images in %s: the held-out loss is measured on training images", cache_uri)
        return load_split(cache_uri, "train", views=1)
