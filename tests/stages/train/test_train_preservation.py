"""Output preservation (`train.preservation_weight`): the base's own prediction for a preservation prompt, LoRA off,
is the target of the LoRA model's for that prompt; a few steps with it keep the adapter's output for that prompt
closer to the base's than the same steps without. On the tiny SD 1.x with 32 px latents, in memory."""

from __future__ import annotations

import pytest
import torch

from artlora.config import ConfigError, PipelineConfig, SearchConfig, TrainConfig, validate
from artlora.data.latents import LatentGroup, LatentSet
from artlora.demo import tiny
from artlora.diffusion.losses import weighted_mse
from artlora.stages.train.errors import TrainError
from artlora.stages.train.preservation import adapters_off
from artlora.stages.train.trainer import Trainer
from artlora.tasks import search

CAPTIONS = ("a woodcut of a tree", "ink wash mountains", "a linocut harbour", "pastel fields")


def latent_set(empty_text: torch.Tensor | None = None) -> LatentSet:
    gen = torch.Generator().manual_seed(0)
    group = LatentGroup(
        latents=torch.randn(8, 4, 8, 8, generator=gen),
        text=torch.randn(8, 77, 32, generator=gen),
        bucket=(32, 32),
        captions=tuple(CAPTIONS[i % len(CAPTIONS)] for i in range(8)),
    )
    return LatentSet((group,), torch.randn(77, 32, generator=gen) if empty_text is None else empty_text, "fp")


def config(**changes) -> TrainConfig:
    values = dict(storage_root="s3://tests", base_model="tiny", batch_size=4, rank=4, learning_rate=2e-2)
    return TrainConfig(**{**values, **changes})


def base_output(trainer: Trainer, pipe_seed: int, noisy, timesteps, text, encode: bool = False) -> torch.Tensor:
    """The prediction of a fresh base model (built as the trainer's was: no adapter at all)."""
    base = tiny.build_tiny_sd(pipe_seed)
    if encode:
        ids = base.tokenizer([""], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        text = base.text_encoder(ids.input_ids)[0].expand(len(noisy), -1, -1)
    return base.unet(noisy, timesteps, text).sample


def drift(trainer: Trainer, text: torch.Tensor) -> float:
    """How far the LoRA model's prediction for `text` is from the base's, on fixed noisy latents."""
    gen = torch.Generator().manual_seed(7)
    noisy, timesteps = torch.randn(6, 4, 8, 8, generator=gen), torch.tensor([50, 200, 400, 600, 800, 950])
    text = text.expand(6, -1, -1)
    with torch.no_grad(), trainer.evaluating():
        lora = trainer.denoiser(noisy, timesteps, text).sample
        with adapters_off(trainer.denoiser):
            base = trainer.denoiser(noisy, timesteps, text).sample
    return float(weighted_mse(lora, base))


def test_preservation_keeps_the_prompts_prediction_closer_to_the_base():
    data = latent_set()
    drifts = {}
    for weight in (0.0, 4.0):
        trainer = Trainer(config(preservation_weight=weight), data, tiny.build_tiny_sd())
        for step in range(3):
            trainer.step(step)
        drifts[weight] = drift(trainer, data.empty_text)
    assert drifts[0.0] > 0, "without preservation the adapter moves the empty caption's prediction"
    assert drifts[4.0] < 0.5 * drifts[0.0], drifts


@pytest.mark.parametrize("train_text_encoder", [False, True])
def test_the_teacher_is_the_base_and_the_term_is_the_weighted_mse(train_text_encoder):
    """After two steps (the adapter no longer zero), the term equals the min-SNR-weighted MSE between the LoRA
    model's prediction for the preservation prompt and a fresh base's, both on the micro-batch's noisy latents;
    the loss adds it times the weight. With the text encoder trained, the base's states are the base encoder's."""
    options = dict(preservation_weight=0.5, min_snr_gamma=1.0, train_text_encoder=train_text_encoder)
    trainer = Trainer(config(**options), latent_set(), tiny.build_tiny_sd())
    for step in range(2):
        trainer.step(step)
    index, family, scheduler = 5, trainer.family, trainer.noise_scheduler
    batch = trainer.micro_batch(index)
    noisy = family.add_noise(scheduler, batch.latents, batch.noise, batch.timesteps)
    weights = family.loss_weights(scheduler, batch.timesteps, trainer.config)
    with torch.no_grad():
        term = trainer.preservation.term(trainer, batch, noisy, index, weights)
        empty = trainer.data.empty_text.expand(len(noisy), -1, -1)
        base = base_output(trainer, 0, noisy, batch.timesteps, empty, encode=train_text_encoder)
        if train_text_encoder:
            empty = trainer.text_encoders.encode(trainer.preservation.ids)[0].expand(len(noisy), -1, -1)
        lora = trainer.denoiser(noisy, batch.timesteps, empty).sample
        loss, metrics = trainer.loss(index, with_perceptual=False, with_preservation=True)
    assert weighted_mse(lora, base) > 1e-8, "the adapter has moved away from the base"
    torch.testing.assert_close(term, weighted_mse(lora, base, weights), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(metrics["loss_preservation"], term, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(loss, metrics["loss_mse"] + 0.5 * term, rtol=1e-5, atol=1e-7)
    # the adapter is on again, its weights trainable, after the base's prediction
    assert all(param.requires_grad for param in trainer.params)
    assert not torch.allclose(trainer.denoiser(noisy, batch.timesteps, empty).sample, base)


def test_preservation_is_taken_every_kth_step_and_reported():
    trainer = Trainer(config(preservation_weight=1.0, preservation_every=2), latent_set(), tiny.build_tiny_sd())
    assert "loss_preservation" in trainer.step(0)
    assert "loss_preservation" not in trainer.step(1)


def test_other_prompts_are_encoded_by_the_base_and_checked_against_the_cache():
    pipe = tiny.build_tiny_sd()
    ids = pipe.tokenizer(["", "a picture"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        states = pipe.text_encoder(ids)[0]
    prompts = ("a picture", "", "a picture")
    trainer = Trainer(config(preservation_weight=1.0, preservation_prompts=prompts), latent_set(states[0]), pipe)
    torch.testing.assert_close(trainer.preservation.hidden, states[[1, 0, 1]])
    assert trainer.preservation.choice(index=1, samples=4).tolist() == [1, 2, 0, 1]  # in turn, across batches
    # a cache whose empty caption the base's encoders do not make (other text settings) is refused
    with pytest.raises(TrainError, match="preservation_prompts"):
        Trainer(config(preservation_weight=1.0, preservation_prompts=prompts), latent_set(), tiny.build_tiny_sd())


def test_preservation_settings_are_validated_searchable_and_left_out_when_off():
    off = config()
    assert not {"preservation_weight", "preservation_prompts"} & set(off.model_dump())  # run keys as before
    on = config(preservation_weight=0.5, preservation_prompts=("a photo",))
    assert on.model_dump()["preservation_prompts"] == ("a photo",)
    assert TrainConfig.model_validate_json(on.model_dump_json()) == on
    with pytest.raises(ValueError, match="preservation_weight"):
        config(preservation_weight=-1.0)
    with pytest.raises(ValueError, match="preservation_every is set but preservation_weight is 0"):
        config(preservation_every=4)
    assert SearchConfig(preservation_weight=(0.0, 1.0)).space() == {"preservation_weight": (0.0, 1.0)}
    base = {"storage_root": "s3://tests", "base_model": "tiny", "model_name": "m", "ingest": {"source": "s3://x/raw"}}
    with pytest.raises(ConfigError, match="preservation_weight"):
        validate({**base, "train": {"preservation_weight": 200.0}})
    searched = validate({**base, "search": {"preservation_weight": [0.0, 2.0]}})
    trials = [PipelineConfig.model_validate_json(text) for text in search.trial_configs(searched)]
    assert [trial.train.preservation_weight for trial in trials] == [0.0, 2.0]
    assert "preservation_weight" not in validate(base).model_dump()["search"]  # the compiled pipeline's as before


def test_sdxl_keeps_the_base_for_the_empty_caption_with_its_pooled_embedding_and_the_views_time_ids():
    gen = torch.Generator().manual_seed(0)
    group = LatentGroup(
        latents=torch.randn(4, 4, 8, 8, generator=gen),
        text=torch.randn(4, 77, 64, generator=gen),
        pooled=torch.randn(4, 32, generator=gen),
        time_ids=torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 4),
    )
    data = LatentSet((group,), torch.randn(77, 64, generator=gen), "fp", torch.randn(32, generator=gen), "sdxl")
    trainer = Trainer(config(preservation_weight=1.0, base_model="tiny-sdxl"), data, tiny.build_tiny_sdxl())
    for step in range(2):
        trainer.step(step)
    batch, family = trainer.micro_batch(2), trainer.family
    noisy = family.add_noise(trainer.noise_scheduler, batch.latents, batch.noise, batch.timesteps)
    text, pooled = data.empty_text.expand(len(noisy), -1, -1), data.empty_pooled.expand(len(noisy), -1)
    added = {"text_embeds": pooled, "time_ids": group.time_ids[batch.rows]}
    with torch.no_grad():
        term = trainer.preservation.term(trainer, batch, noisy, 2, None)
        adapted = trainer.denoiser(noisy, batch.timesteps, text, added_cond_kwargs=added).sample
        with adapters_off(trainer.denoiser):
            base = trainer.denoiser(noisy, batch.timesteps, text, added_cond_kwargs=added).sample
    assert weighted_mse(adapted, base) > 0
    torch.testing.assert_close(term, weighted_mse(adapted, base), rtol=1e-4, atol=1e-8)
