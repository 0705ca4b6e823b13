"""The caption gap: held-out loss with a caption other than the view's own, minus with its own. With several
styles the other caption is another style's; with one style, the empty caption (a caption without the style's
words), so that a single-style dataset gets the evidence too."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from artlora.data.latents import LatentGroup, LatentSet
from artlora.diffusion.heldout import HeldoutLoss, with_empty_captions, with_other_styles_captions
from artlora.stages.evaluate import sides


def _data(styles: tuple[str, ...], pooled: bool = False) -> LatentSet:
    gen = torch.Generator().manual_seed(0)
    count = len(styles)
    group = LatentGroup(
        latents=torch.randn(count, 4, 8, 8, generator=gen),
        text=torch.randn(count, 6, 16, generator=gen) + 1,  # never the empty caption's zeros
        pooled=torch.randn(count, 16, generator=gen) + 1 if pooled else None,
        captions=tuple(f"a {style} picture" for style in styles),
        styles=styles,
    )
    return LatentSet(
        groups=(group,),
        empty_text=torch.zeros(6, 16),
        dataset_fingerprint="test",
        empty_pooled=torch.zeros(16) if pooled else None,
    )


def test_with_empty_captions_gives_every_view_the_empty_caption_and_keeps_the_latents():
    data = _data(("woodcut",) * 3, pooled=True)
    empty = with_empty_captions(data)
    group = empty.groups[0]
    assert torch.equal(group.text, torch.zeros(3, 6, 16)) and torch.equal(group.pooled, torch.zeros(3, 16))
    assert torch.equal(group.latents, data.groups[0].latents) and group.styles == data.groups[0].styles
    assert not torch.equal(data.groups[0].text, group.text)  # the input is left as it was


def _gap(data: LatentSet, monkeypatch) -> float:
    """The gap with a stand-in held-out loss: the mean of the caption states' absolute values (zero for the empty
    caption), so the gap says which captions were tried."""

    def heldout(pipe, scheduler, swapped, config):
        text = torch.cat([group.text for group in swapped.groups])
        return HeldoutLoss(float(text.abs().mean()), {}, 0.0)

    monkeypatch.setattr(sides, "_heldout", heldout)
    styles = sorted({style for group in data.groups for style in group.styles if style})  # as heldout counts them
    own = heldout(None, None, data, None)
    return sides.caption_gap(None, None, data, None, HeldoutLoss(own.loss, dict.fromkeys(styles, 0.0), 0.0))


def test_one_style_measures_the_gap_with_the_empty_caption(monkeypatch):
    data = _data(("woodcut",) * 4)
    own = float(data.groups[0].text.abs().mean())
    assert math.isclose(_gap(data, monkeypatch), 0.0 - own, rel_tol=1e-6)


def test_several_styles_measure_it_with_another_styles_caption(monkeypatch):
    data = _data(("woodcut", "watercolour", "woodcut", "watercolour"))
    swapped = with_other_styles_captions(data)
    expected = float(swapped.groups[0].text.abs().mean()) - float(data.groups[0].text.abs().mean())
    assert math.isclose(_gap(data, monkeypatch), expected, rel_tol=1e-6)


def test_a_cache_without_styles_has_no_gap(monkeypatch):
    data = _data(("woodcut",) * 2)
    older = replace(data, groups=tuple(replace(group, styles=()) for group in data.groups))  # an older index
    assert math.isnan(_gap(older, monkeypatch))
