"""Painting with a loaded pipeline: one image per (prompt, seed), the same way wherever artlora paints to compare
(the evaluation's images, the gallery painted while training).

The noise of each image comes from a CPU generator seeded with its seed, so a seed gives the same starting noise
every time and on every device; nothing here draws from torch's global random state.
"""

from __future__ import annotations

import numpy as np
import torch

from artlora.diffusion import families

BATCH = 8  # images per pipeline call: bounded memory on large models


@torch.no_grad()
def paint(
    pipe,
    prompts: list[str],
    seeds: list[int],
    *,
    resolution: int | tuple[int, int],
    steps: int,
    guidance: float,
    lora_scale: float | None = None,
    negative_prompt: str = "",
) -> np.ndarray:
    """uint8 [n, height, width, 3]; `resolution` is the side of a square or (width, height), in pixels.
    `lora_scale` sets a loaded adapter's strength for these images only."""
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    extra = families.of(pipe).paint_arguments(lora_scale)  # how this family takes an adapter's strength
    if negative_prompt:  # passed only when given: not every family's pipeline takes one
        extra = {**extra, "negative_prompt": negative_prompt}
    out = []
    for start in range(0, len(prompts), BATCH):
        batch = slice(start, start + BATCH)
        result = pipe(
            prompts[batch],
            height=height,
            width=width,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds[batch]],
            output_type="np",
            **_per_prompt(extra, len(prompts[batch])),
        )
        out.append((result.images * 255).round().astype(np.uint8))
    return np.concatenate(out)


def _per_prompt(arguments: dict, count: int) -> dict:
    """A negative prompt as a list as long as the batch's: diffusers refuses one string beside a list of prompts."""
    if "negative_prompt" in arguments:
        return {**arguments, "negative_prompt": [arguments["negative_prompt"]] * count}
    return arguments
