"""The held-out denoising loss: what train validates with and evaluate reports, measured the same way.

Every validation view is noised at each of a fixed set of timesteps with noise fixed by the seed, so two numbers
(base and LoRA, one run and another) are directly comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from artlora.data.latents import LatentSet

if TYPE_CHECKING:  # the family is passed in: the metrics' names (register's gate) load no diffusers
    from artlora.diffusion.families import Family


@dataclass(frozen=True)
class HeldoutLoss:
    """The held-out loss over every validation view, per style, and the zero predictor's (a model that always
    predicts zeros): the reference that says how much of the target a model explains at all."""

    loss: float
    per_style: dict[str, float]
    zero_predictor: float


@torch.no_grad()
def heldout_loss_by_style(
    family: Family, model, scheduler, data: LatentSet, timesteps: tuple[int, ...], seed: int
) -> HeldoutLoss:
    """Mean MSE over every validation view at each fixed timestep, with noise fixed by the seed; also per style
    (the views' `styles`) and for the zero predictor. `model` is the family's denoiser (UNet or transformer);
    the family turns each fixed timestep (0-999) into its own and noises, predicts and targets as it trains."""
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, list[float]] = {}  # style -> [squared error, elements]
    total = zeros = count = 0.0
    for group in data.groups:
        noise = torch.randn(group.latents.shape, generator=gen)
        styles = group.styles or ("",) * len(group)
        for t in timesteps:
            for chunk in torch.arange(len(group)).split(32):
                latents, steps = group.latents[chunk], family.heldout_timesteps(scheduler, t, len(chunk))
                noisy = family.add_noise(scheduler, latents, noise[chunk], steps)
                conditioning = family.conditioning(group, chunk)
                output = family.predict(model, noisy, steps, group.text[chunk], conditioning)
                target = family.target(scheduler, latents, noise[chunk], steps)
                per_view = (output - target).square().flatten(1).sum(1)
                for style, error in zip((styles[i] for i in chunk.tolist()), per_view.tolist(), strict=True):
                    entry = sums.setdefault(style, [0.0, 0.0])
                    entry[0] += error
                    entry[1] += target[0].numel()
                total += per_view.sum().item()
                zeros += target.square().sum().item()
                count += target.numel()
    per_style = {style: error / elements for style, (error, elements) in sorted(sums.items()) if style}
    return HeldoutLoss(total / count, per_style, zeros / count)


def with_other_styles_captions(data: LatentSet) -> LatentSet:
    """The same views, each paired with the caption of a view of the next style (styles in sorted order): the
    held-out loss on it, minus the loss with the right captions, is the caption gap. A model that reads the style
    from the caption loses accuracy when given another style's caption; one trained with captions shuffled
    against the images does not. Unchanged when the views have fewer than two styles."""
    if not all(group.styles for group in data.groups):  # an older index, without styles
        return data
    views = [(g, i, style) for g in data.groups for i, style in enumerate(g.styles)]
    by_style: dict[str, list[tuple]] = {}
    for view in views:
        by_style.setdefault(view[2], []).append(view)
    order = sorted(by_style)
    if len(order) < 2:
        return data
    following = dict(zip(order, order[1:] + order[:1], strict=True))
    seen: dict[str, int] = {}
    groups = []
    for group in data.groups:
        text, pooled = [], []
        for style in group.styles:
            others = by_style[following[style]]
            donor, row, _ = others[seen.get(style, 0) % len(others)]
            seen[style] = seen.get(style, 0) + 1
            text.append(donor.text[row])
            if group.pooled is not None:
                pooled.append(donor.pooled[row])
        groups.append(replace(group, text=torch.stack(text), pooled=torch.stack(pooled) if pooled else group.pooled))
    return replace(data, groups=tuple(groups))


def with_empty_captions(data: LatentSet) -> LatentSet:
    """The same views, each paired with the empty caption: for a dataset of one style, where there is no other
    style's caption to try, the caption without the style's words. A model that learned the style as what its
    captions ask for loses more accuracy without them than the base model does."""
    groups = []
    for group in data.groups:
        count = len(group)
        text = data.empty_text.expand(count, *data.empty_text.shape)
        pooled = group.pooled if data.empty_pooled is None else data.empty_pooled.expand(count, -1)
        groups.append(replace(group, text=text, pooled=pooled))
    return replace(data, groups=tuple(groups))


def heldout_loss(family: Family, model, scheduler, data: LatentSet, timesteps: tuple[int, ...], seed: int) -> float:
    """Mean MSE over every validation view at each fixed timestep, with noise fixed by the seed."""
    return heldout_loss_by_style(family, model, scheduler, data, timesteps, seed).loss


def heldout_metrics(base: float, lora: float) -> dict[str, float]:
    """The held-out losses under the names evaluate logs them and register compares them by."""
    return {"val_loss_base": base, "val_loss_lora": lora, "val_loss_delta": lora - base}
