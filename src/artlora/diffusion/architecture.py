"""Which Stable Diffusion architecture a model is: the one place that asks."""

from __future__ import annotations


def is_sdxl(model) -> bool:
    """Whether a pipeline (or its UNet) is SDXL-architecture: two text encoders, pooled embeddings and size/crop
    time ids, which the UNet takes as `added_cond_kwargs` ("text_time")."""
    unet = getattr(model, "unet", model)
    return getattr(unet.config, "addition_embed_type", None) == "text_time"
