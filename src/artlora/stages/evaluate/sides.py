"""One model's side of the evaluation (the base, or base + LoRA): its held-out loss, overall and per style, its
caption gap, and what it paints from each style's held-out captions, the content prompts and the sample prompts.
Both sides are measured by the same calls with the same noise and seeds, so they compare directly."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from artlora.config import EvaluateConfig
from artlora.data.latents import LatentSet
from artlora.diffusion import families
from artlora.diffusion.heldout import (
    HeldoutLoss,
    heldout_loss_by_style,
    with_empty_captions,
    with_other_styles_captions,
)
from artlora.stages.evaluate import painting


@dataclass
class Side:
    """What one model (the base, or base + LoRA) did on every measure."""

    loss: HeldoutLoss
    caption_gap: float  # held-out loss with another style's caption (one style: the empty one), minus with its own
    by_style: dict[str, np.ndarray]  # style -> images painted from that style's held-out captions
    content: np.ndarray  # images of the content prompts
    grid: list[list[Image.Image]]  # the sample prompts x seeds
    matrices: dict[str, np.ndarray] = field(default_factory=dict)  # style distances, filled in by the run
    to_content: dict[str, np.ndarray] = field(default_factory=dict)  # each style's to other content, by the run


def measure(pipe, scheduler, data: LatentSet, config: EvaluateConfig, prompts: dict[str, list[str]]) -> Side:
    """Everything one side is measured on, with the pipeline as it is now (with or without the adapter)."""
    loss = _heldout(pipe, scheduler, data, config)
    by_style, content, grid = paint_styles(pipe, config, prompts), paint_content(pipe, config), paint_grid(pipe, config)
    gap = caption_gap(pipe, scheduler, data, config, loss)
    return Side(loss=loss, caption_gap=gap, by_style=by_style, content=content, grid=grid)


def caption_gap(pipe, scheduler, data: LatentSet, config: EvaluateConfig, right: HeldoutLoss) -> float:
    """Held-out loss with each view given another style's caption, minus with its own. With one style, the empty
    caption takes the other style's place (NaN for an older cache without styles)."""
    swapped = with_other_styles_captions(data)
    if swapped is data:
        if len(right.per_style) != 1:
            return float("nan")
        swapped = with_empty_captions(data)
    return _heldout(pipe, scheduler, swapped, config).loss - right.loss


def _heldout(pipe, scheduler, data: LatentSet, config: EvaluateConfig) -> HeldoutLoss:
    family = families.of(pipe)
    denoiser = getattr(pipe, family.denoiser)
    return heldout_loss_by_style(family, denoiser, scheduler, data, config.loss_timesteps, config.seed)


def paint_styles(pipe, config: EvaluateConfig, prompts: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Per style, images painted from its held-out captions, seeds 0, 1, ... (one per caption)."""
    seeds = list(range(config.images_per_style))
    return {
        style: painting.paint(pipe, captions, seeds[: len(captions)], config) for style, captions in prompts.items()
    }


def paint_content(pipe, config: EvaluateConfig) -> np.ndarray:
    """The content prompts (outside the styles), each with every image seed."""
    prompts = [prompt for prompt in config.content_prompts for _ in config.image_seeds]
    seeds = [seed for _ in config.content_prompts for seed in config.image_seeds]
    return painting.paint(pipe, prompts, seeds, config)


def paint_grid(pipe, config: EvaluateConfig) -> list[list[Image.Image]]:
    """The sample prompts, one row each, with every image seed."""
    per_row = len(config.image_seeds)
    prompts = [prompt for prompt in config.prompts for _ in config.image_seeds]
    images = painting.paint(pipe, prompts, list(config.image_seeds) * len(config.prompts), config)
    return [[Image.fromarray(image) for image in images[i : i + per_row]] for i in range(0, len(images), per_row)]
