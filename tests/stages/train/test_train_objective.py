"""The training objective and optimisation, on the tiny model with in-memory latents: each option does what it
says (min-SNR weights, v-prediction target, noise offset, caption dropout, perceptual cost controls, gradient
accumulation), the LR schedules have their shapes, and the LoRA targets and DoRA are what the config asks."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from artlora.config import ConfigError, TrainConfig
from artlora.data.latents import LatentGroup, LatentSet
from artlora.demo import tiny
from artlora.diffusion.families.unet import diffusion_target, min_snr_weights
from artlora.diffusion.losses import PerceptualLoss, offset_noise, perceptual_subset, weighted_mse
from artlora.stages.train.trainer import Trainer, make_schedule


def config(**changes) -> TrainConfig:
    return TrainConfig(**{"storage_root": "s3://tests", "base_model": "tiny", "batch_size": 4, **changes})


def latent_set(text_dim: int = 32) -> LatentSet:
    """Two buckets of random latents (16x16 and 16x24: the tiny VAE downsamples by 4) with caption states."""
    gen = torch.Generator().manual_seed(0)
    groups = tuple(
        LatentGroup(latents=torch.randn(n, 4, 16, w, generator=gen), text=torch.randn(n, 77, text_dim, generator=gen))
        for n, w in ((8, 16), (4, 24))
    )
    return LatentSet(groups, torch.zeros(77, text_dim), "fingerprint")


def trainer(prediction_type: str = "epsilon", **changes) -> Trainer:
    return Trainer(config(**changes), latent_set(), tiny.build_tiny_sd(prediction_type=prediction_type))


# -- the target and its weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_follow_the_formula(prediction_type):
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    timesteps = torch.tensor([1, 50, 300, 999])
    alpha_bar = scheduler.alphas_cumprod[timesteps]
    ratio = alpha_bar / (1 - alpha_bar)  # the SNR by its definition, not by the code under test
    weights = min_snr_weights(scheduler, timesteps, gamma=5.0)
    denominator = ratio + 1 if prediction_type == "v_prediction" else ratio
    torch.testing.assert_close(weights, torch.minimum(ratio, torch.tensor(5.0)) / denominator, rtol=1e-6, atol=0)
    assert ratio[0] > 5 > ratio[-1], "the test covers both sides of gamma"
    if prediction_type == "epsilon":
        assert weights[0] < 1 and weights[-1] == pytest.approx(1.0)  # clean steps down-weighted, noisy ones not


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])  # diffusers' default; Stable Diffusion's
def test_the_snr_of_the_weights_is_its_definition(prediction_type, schedule):
    """diffusers' `compute_snr`, which the min-SNR weights use, is alpha_bar / (1 - alpha_bar) to float32 rounding
    at every timestep (measured: 4e-7 at most; the hand-written ratio it replaced agreed with it as closely)."""
    betas = {"beta_start": 0.00085, "beta_end": 0.012} if schedule == "scaled_linear" else {}
    scheduler = DDPMScheduler(beta_schedule=schedule, prediction_type=prediction_type, **betas)
    timesteps = torch.arange(scheduler.config.num_train_timesteps)
    ratio = compute_snr(scheduler, timesteps)
    alpha_bar = scheduler.alphas_cumprod.double()
    torch.testing.assert_close(ratio.double(), alpha_bar / (1 - alpha_bar), rtol=1e-6, atol=0)
    assert ratio.dtype == torch.float32


def test_weighted_mse_weights_each_sample_mean():
    output, target = torch.zeros(2, 1, 2, 2), torch.tensor([1.0, 3.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    assert weighted_mse(output, target).item() == pytest.approx(5.0)
    assert weighted_mse(output, target, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.5)


def test_v_prediction_target_is_the_velocity():
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    latents, noise, timesteps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    alpha_bar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    expected = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
    torch.testing.assert_close(diffusion_target(scheduler, latents, noise, timesteps), expected)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_trainer_loss_is_mse_on_the_models_target_with_min_snr_weights(prediction_type):
    plain = trainer(prediction_type)
    weighted = trainer(prediction_type, min_snr_gamma=1.0)
    batch = plain.micro_batch(0)
    scheduler = plain.noise_scheduler
    noisy = scheduler.add_noise(batch.latents, batch.noise, batch.timesteps)
    with torch.no_grad():
        output = plain.denoiser(noisy, batch.timesteps, batch.text).sample
        loss, _ = plain.loss(0, with_perceptual=False)
        weighted_loss, _ = weighted.loss(0, with_perceptual=False)
    target = diffusion_target(scheduler, batch.latents, batch.noise, batch.timesteps)
    torch.testing.assert_close(loss, weighted_mse(output, target))
    weights = min_snr_weights(scheduler, batch.timesteps, 1.0)
    torch.testing.assert_close(weighted_loss, weighted_mse(output, target, weights))


# -- noise offset and caption dropout ---------------------------------------------------------------------


def test_noise_offset_adds_a_constant_per_sample_and_channel():
    noise = torch.randn(3, 4, 8, 8)
    shifted = offset_noise(noise, 0.1, torch.Generator().manual_seed(0))
    shift = shifted - noise
    assert torch.allclose(shift, shift[..., :1, :1].expand_as(shift))
    assert shift.abs().max() > 0 and shift[0, 0, 0, 0] != shift[1, 0, 0, 0]
    assert torch.equal(trainer(noise_offset=0.1).micro_batch(3).noise, trainer(noise_offset=0.1).micro_batch(3).noise)
    assert not torch.equal(trainer().micro_batch(3).noise, trainer(noise_offset=0.1).micro_batch(3).noise)


def test_caption_dropout_swaps_in_the_empty_caption_deterministically():
    dropping = trainer(caption_dropout=0.5)
    empty = dropping.data.empty_text
    dropped = [bool(torch.equal(text, empty)) for i in range(6) for text in dropping.micro_batch(i).text]
    assert any(dropped) and not all(dropped)
    again = [
        bool(torch.equal(text, empty)) for i in range(6) for text in trainer(caption_dropout=0.5).micro_batch(i).text
    ]
    assert dropped == again  # fixed by (seed, micro-batch)
    plain = trainer()
    assert not any(torch.equal(text, empty) for i in range(6) for text in plain.micro_batch(i).text)


# -- perceptual cost controls ------------------------------------------------------------------------------


def test_perceptual_subset_takes_low_timesteps_up_to_the_limit():
    timesteps = torch.tensor([900, 10, 500, 20, 30])
    assert perceptual_subset(timesteps, 1000, None).tolist() == [0, 1, 2, 3, 4]
    assert perceptual_subset(timesteps, 600, None).tolist() == [1, 2, 3, 4]
    assert perceptual_subset(timesteps, 600, 2).tolist() == [1, 2]
    assert perceptual_subset(timesteps, 5, None).tolist() == []


def test_perceptual_scale_decodes_smaller_images():
    vae = tiny.build_tiny_sd().vae
    latents = torch.randn(1, 4, 16, 16)
    full = PerceptualLoss(vae, net="squeeze", backbone="random")
    half = PerceptualLoss(vae, net="squeeze", backbone="random", scale=0.5)
    assert full.decode(latents).shape[-1] == 64 and half.decode(latents).shape[-1] == 32
    assert half(latents, latents).item() == pytest.approx(0.0, abs=1e-6)


def test_perceptual_term_follows_every_and_max_timestep():
    options = dict(perceptual_weight=1.0, perceptual_net="squeeze", perceptual_backbone="random")
    every_other = trainer(**options, perceptual_every=2)
    assert "loss_perceptual" in every_other.step(0) and "loss_perceptual" not in every_other.step(1)
    low_only = trainer(**options, perceptual_max_timestep=300)
    for step in range(2):  # the term is there exactly when some sample of the batch has t < 300
        chosen = perceptual_subset(low_only.micro_batch(step).cpu_timesteps, 300, None)
        assert ("loss_perceptual" in low_only.step(step)) == bool(len(chosen))


# -- optimisation -------------------------------------------------------------------------------------------


def _rates(schedule_name: str, warmup: int = 2, steps: int = 10) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = make_schedule(optimizer, config(lr_schedule=schedule_name, warmup_steps=warmup, max_steps=steps))
    rates = []
    for _ in range(steps):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    return rates


def test_lr_schedule_shapes():
    linear, cosine, constant = _rates("linear"), _rates("cosine"), _rates("constant")
    assert linear[:3] == pytest.approx([0.0, 0.5, 1.0]) and cosine[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert linear[2:] == pytest.approx([1.0 - k / 8 for k in range(8)])  # straight line to 0 at max_steps
    assert cosine[6] == pytest.approx(0.5) and cosine[4] > 1.0 - 2 / 8  # half-way; above the line early
    assert constant[:3] == pytest.approx([0.0, 0.5, 1.0]) and constant[2:] == pytest.approx([1.0] * 8)
    assert _rates("linear", warmup=0)[0] == pytest.approx(1.0)


def test_gradient_accumulation_averages_consecutive_micro_batches():
    single, accumulating = trainer(), trainer(gradient_accumulation=2)
    with torch.no_grad():
        first, second = single.loss(2, False)[0], single.loss(3, False)[0]
    metrics = accumulating.step(1)  # optimizer step 1 = micro-batches 2 and 3
    assert metrics["loss"].item() == pytest.approx(((first + second) / 2).item(), rel=1e-5)


def test_a_step_changes_only_the_lora_weights_and_keeps_them_fp32():
    model = trainer(learning_rate=1e-2)
    frozen = {n: p.detach().clone() for n, p in model.denoiser.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.denoiser.named_parameters() if p.requires_grad}
    model.step(0)
    model.step(1)
    after = dict(model.denoiser.named_parameters())
    assert all(torch.equal(after[n], value) for n, value in frozen.items())
    assert any(not torch.equal(after[n], value) for n, value in trained.items())
    assert all(p.dtype == torch.float32 for p in model.params)


# -- the adapter's shape ------------------------------------------------------------------------------------


def test_target_groups_dora_and_a_clear_error_for_unknown_modules():
    model = trainer(target_modules=("attention", "feed_forward", "convolutions"), use_dora=True)
    names = {n.rsplit(".lora_", 1)[0] for n, p in model.denoiser.named_parameters() if p.requires_grad}
    for suffix in ("attn1.to_q", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "resnets.0.conv1", "conv_shortcut"):
        assert any(name.endswith(suffix) for name in names), suffix
    assert any(name.endswith("downsamplers.0.conv") for name in names)
    assert any("lora_magnitude_vector" in n for n, _ in model.denoiser.named_parameters())
    attention_only = trainer()
    assert all(".attn" in n for n, p in attention_only.denoiser.named_parameters() if p.requires_grad)
    with pytest.raises(ConfigError, match="target_modules"):
        trainer(target_modules=("no_such_layer",))
