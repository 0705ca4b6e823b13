"""Per-style repeats in the sampler, per-style loss weights, and caption variants drawn per view and step: all
fixed by (seed, micro-batch index), so a resumed run draws what an uninterrupted one does."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from artlora.config import TrainConfig
from artlora.data.latents import CaptionVariants, LatentGroup, LatentSet
from artlora.demo import tiny
from artlora.stages.train import run as train
from artlora.stages.train.sampling import batch_for_step, caption_draws, effective_sizes, epoch_batches

TOKENS, DIM = 77, 32  # the tiny text encoder's


def config(**kwargs) -> TrainConfig:
    return TrainConfig(storage_root="s3://tests", base_model="tiny", **{"batch_size": 2, "seed": 5, **kwargs})


def trainer_for(group: LatentGroup, **kwargs) -> train.Trainer:
    data = LatentSet((group,), torch.zeros(TOKENS, DIM), "fp")
    return train.Trainer(config(**kwargs), data, tiny.build_tiny_sd())


# -- repeats ----------------------------------------------------------------------------------------------


def test_a_repeated_view_fills_as_many_places_per_epoch():
    repeats = [torch.tensor([3, 3, 1, 1, 1, 1]), None]
    assert effective_sizes([6, 4], repeats) == [10, 4]
    for epoch in range(3):
        drawn = Counter(
            (group, int(i))
            for group, rows in epoch_batches([6, 4], 4, seed=1, epoch=epoch, repeats=repeats)
            for i in rows
        )
        assert drawn == {(0, 0): 3, (0, 1): 3, **{(0, i): 1 for i in range(2, 6)}, **{(1, i): 1 for i in range(4)}}
    ones = [torch.ones(6, dtype=torch.long), None]
    plain, same = epoch_batches([6, 4], 4, 1, 0), epoch_batches([6, 4], 4, 1, 0, ones)
    assert [(g, r.tolist()) for g, r in plain] == [(g, r.tolist()) for g, r in same], "repeats of 1 change nothing"


def test_the_sampler_draws_a_repeated_style_as_many_times_as_often():
    styles = ("a", "a", "b", "b", "b", "b")  # two images of style a repeated 3 times, four of b once
    group = LatentGroup(
        latents=torch.zeros(6, 4, 8, 8),
        text=torch.zeros(6, TOKENS, DIM),
        styles=styles,
        repeats=torch.tensor([3, 3, 1, 1, 1, 1]),
    )
    trainer = trainer_for(group)
    steps = 5 * 5  # five epochs of 10 places in batches of 2
    drawn = Counter(styles[int(i)] for step in range(steps) for i in trainer.batch(step)[1])
    per_image = {style: drawn[style] / styles.count(style) for style in "ab"}
    assert per_image == {"a": 15.0, "b": 5.0}, "each image of a is drawn 3 times as often as one of b"
    for step in (0, 7, 24, 3):  # the trainer's batches are batch_for_step's, across epochs and back
        group_index, rows = trainer.batch(step)
        expected = batch_for_step([6], 2, 5, step, [group.repeats])
        assert group_index == expected[0] and torch.equal(rows, expected[1])


# -- loss weights -----------------------------------------------------------------------------------------


def test_a_styles_loss_weight_scales_its_views_loss():
    latents, text = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.zeros(4, TOKENS, DIM)
    plain = trainer_for(LatentGroup(latents=latents, text=text), batch_size=1)
    weights = torch.tensor([3.0, 3.0, 1.0, 0.5])
    weighted = trainer_for(LatentGroup(latents=latents, text=text, loss_weights=weights), batch_size=1)
    seen = set()
    for index in range(8):
        (row,) = plain.batch(index)[1].tolist()
        seen.add(row)
        with torch.no_grad():
            base, scaled = plain.loss(index, False)[0], weighted.loss(index, False)[0]
        assert scaled.item() == pytest.approx(weights[row].item() * base.item(), rel=1e-5)
    assert seen == {0, 1, 2, 3}


# -- caption variants -------------------------------------------------------------------------------------


def variant_group(views: int = 4, per_view: int = 3) -> LatentGroup:
    """Views whose caption variants are told apart by their states: variant k of view v is all 100 v + k."""
    states = torch.tensor([100.0 * v + k for v in range(views) for k in range(per_view)])
    return LatentGroup(
        latents=torch.randn(views, 4, 8, 8, generator=torch.Generator().manual_seed(1)),
        text=torch.zeros(views, TOKENS, DIM),
        captions=tuple(f"view {v}" for v in range(views)),
        variants=CaptionVariants(
            text=states.view(-1, 1, 1).expand(-1, TOKENS, DIM).clone(),
            pooled=None,
            captions=tuple(f"view {v}, variant {k}" for v in range(views) for k in range(per_view)),
            choices=torch.arange(views * per_view).view(views, per_view),
            counts=torch.full((views,), per_view),
        ),
    )


def drawn_variants(trainer: train.Trainer, index: int) -> dict[int, int]:
    batch = trainer.micro_batch(index)
    return {int(row): int(batch.text[i, 0, 0]) for i, row in enumerate(batch.rows)}


def test_each_view_trains_with_its_own_variants_drawn_by_step_and_resumes_exactly():
    group = variant_group()
    trainer = trainer_for(group)
    picks: dict[int, set[int]] = {}
    for index in range(40):
        for row, state in drawn_variants(trainer, index).items():
            assert state // 100 == row, "a view draws only among its own variants"
            picks.setdefault(row, set()).add(state % 100)
    assert picks == {row: {0, 1, 2} for row in range(4)}, "every view meets all its variants across steps"
    resumed = trainer_for(group)  # a fresh trainer (a resumed run) draws for step 37 what this one drew
    assert drawn_variants(resumed, 37) == drawn_variants(trainer, 37)
    without = trainer_for(LatentGroup(latents=group.latents, text=group.text, captions=group.captions))
    for index in (0, 5):  # variants take their own draws: batches, noise and timesteps are unchanged
        a, b = trainer.micro_batch(index), without.micro_batch(index)
        assert torch.equal(a.rows, b.rows) and torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps)


def test_with_a_trained_text_encoder_the_variants_token_ids_are_used():
    group = variant_group(views=2, per_view=2)
    trainer = trainer_for(group, train_text_encoder=True)
    assert trainer.text_encoders is not None
    for index in range(4):
        batch = trainer.micro_batch(index)
        chosen = group.variants.pick(batch.rows, caption_draws(5, index, len(batch.rows)))
        expected = trainer.text_encoders.tokenize([group.variants.captions[int(i)] for i in chosen])
        assert all(torch.equal(got, want) for got, want in zip(batch.ids, expected, strict=True))
