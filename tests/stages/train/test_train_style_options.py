"""The style-training options of issue 24 on the tiny model with in-memory latents: the EMA of the adapter's weights
(its formula, an exact resume from a checkpoint's files, and that validation and both adapter files take it), the
timestep bias for every family's draw, and the pseudo-Huber loss; each off by default, and then as before."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling
from safetensors.torch import load_file
from small_configs import DEMO_CONFIG

from artlora.config import PipelineConfig, TrainConfig, load_config
from artlora.config import search as search_config
from artlora.config import train as train_config
from artlora.data import tensor_files
from artlora.data.latents import LatentGroup, LatentSet
from artlora.demo import tiny
from artlora.diffusion.families import FAMILIES
from artlora.diffusion.families.flow import shift_sigmas
from artlora.diffusion.losses import elementwise_error, weighted_loss, weighted_mse
from artlora.stages.train import lora
from artlora.stages.train import run as train
from artlora.stages.train.checkpoints import Checkpoint
from artlora.stages.train.early_stopping import EarlyStopping
from artlora.stages.train.ema import AdapterEMA
from artlora.stages.train.trainer import Trainer


def config(**changes) -> TrainConfig:
    return TrainConfig(**{"storage_root": "s3://tests", "base_model": "tiny", "batch_size": 2, **changes})


def latent_set(seed: int = 0) -> LatentSet:
    """Four 8x8 latents with 8-token caption states: what the tiny UNet trains on fastest."""
    gen = torch.Generator().manual_seed(seed)
    group = LatentGroup(latents=torch.randn(4, 4, 8, 8, generator=gen), text=torch.randn(4, 8, 32, generator=gen))
    return LatentSet((group,), torch.zeros(8, 32), "fingerprint")


def trainer(**changes) -> Trainer:
    changes = {"learning_rate": 1e-2, "warmup_steps": 0, "eval_timesteps": (500,), **changes}
    return Trainer(config(**changes), latent_set(), tiny.build_tiny_sd())


def weights(model: Trainer) -> list[torch.Tensor]:
    return [param.detach().clone() for param in model.params]


# -- the settings -------------------------------------------------------------------------------------------


def test_the_settings_are_left_out_of_the_run_key_until_set():
    plain = config()
    assert not train_config.ADDED_LATER & set(plain.model_dump()), "a default config's dump is what it was before them"
    explicit = config(ema_decay=0.0, ema_warmup=True, timestep_bias="none", loss="mse")
    assert train.run_uri(explicit) == train.run_uri(plain)
    for change in ({"ema_decay": 0.999}, {"timestep_bias": "high_noise"}, {"loss": "huber"}):
        changed = config(**change)
        assert train.run_uri(changed) != train.run_uri(plain)
        assert TrainConfig.model_validate(changed.model_dump(mode="json")) == changed  # the dump reads back
    pipeline = load_config(DEMO_CONFIG)
    assert not set(search_config.ADDED_LATER) & set(pipeline.model_dump(mode="json")["search"])


def test_a_setting_of_an_option_that_is_off_is_refused():
    for given, switch in (
        ({"huber_delta": 0.5}, "loss"),
        ({"timestep_bias_strength": 2.0}, "timestep_bias"),
        ({"ema_warmup": False}, "ema_decay"),
    ):
        with pytest.raises(ValueError, match=f"{next(iter(given))} is set but {switch}"):
            config(**given)
    assert config(loss="huber", huber_delta=0.5).huber_delta == 0.5
    with pytest.raises(ValueError, match="ema_decay"):
        config(ema_decay=1.0)


def test_the_search_varies_them_and_checks_each_value():
    data = load_config(DEMO_CONFIG).model_dump(mode="json")
    data["search"] = {"ema_decay": [0.0, 0.99], "timestep_bias": ["none", "high_noise"], "loss": ["mse", "huber"]}
    searched = PipelineConfig.model_validate(data)
    assert list(searched.search.space()) == ["ema_decay", "timestep_bias", "loss"]
    data["search"] = {"huber_delta": [0.05]}  # with train.loss mse: a setting of an option that is off
    with pytest.raises(ValueError, match="huber_delta"):
        PipelineConfig.model_validate(data)


# -- the timestep bias --------------------------------------------------------------------------------------

SCHEDULERS = {
    "sd1": DDPMScheduler(num_train_timesteps=1000),
    "sdxl": DDPMScheduler(num_train_timesteps=1000),
    "sd3": FlowMatchEulerDiscreteScheduler(shift=3.0),
    "flux": FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
}


def _draws_before_the_bias(name: str, shape: torch.Size, seed: int) -> torch.Tensor:
    """What each family drew before the bias existed (the code of then, written out)."""
    gen, scheduler = torch.Generator().manual_seed(seed), SCHEDULERS[name]
    if name in ("sd1", "sdxl"):
        return torch.randint(0, 1000, (shape[0],), generator=gen)
    u = compute_density_for_timestep_sampling("logit_normal", shape[0], logit_mean=0.0, logit_std=1.0, generator=gen)
    return shift_sigmas(scheduler, u.clamp(1e-5, 1 - 1e-5), (shape[-2] // 2) * (shape[-1] // 2)) * 1000


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_the_timestep_bias_moves_every_familys_draws_and_none_draws_as_before(name):
    family, scheduler, shape = FAMILIES[name], SCHEDULERS[name], torch.Size((4096, 16, 32, 32))

    def draws(**changes) -> torch.Tensor:
        return family.sample_timesteps(scheduler, shape, torch.Generator().manual_seed(0), config(**changes)).float()

    assert torch.equal(draws(), _draws_before_the_bias(name, shape, 0).float())
    plain, high = draws(), draws(timestep_bias="high_noise")
    low, stronger = draws(timestep_bias="low_noise"), draws(timestep_bias="high_noise", timestep_bias_strength=6.0)
    assert low.mean() + 50 < plain.mean() < high.mean() - 50 and stronger.mean() > high.mean()
    assert low.min() >= 0 and high.max() < 1000
    if name == "sd1":  # from a uniform draw, strength 3 is the cubic draw: mean 3/4 of the range, integers
        assert high.mean().item() == pytest.approx(0.75 * 999, rel=0.03)
        biased = config(timestep_bias="high_noise")
        assert family.sample_timesteps(scheduler, shape, torch.Generator(), biased).dtype == torch.long


# -- the Huber loss -----------------------------------------------------------------------------------------


def test_the_huber_loss_is_the_pseudo_huber_error_and_mse_stays_the_default():
    output, target = torch.zeros(2, 1, 1, 2), torch.tensor([[[[0.05, 1.0]]], [[[-3.0, 0.0]]]])
    delta = 0.1

    def by_hand(error: float) -> float:
        return 2 * delta * (math.sqrt(error**2 + delta**2) - delta)

    per_sample = [(by_hand(0.05) + by_hand(1.0)) / 2, (by_hand(-3.0) + by_hand(0.0)) / 2]
    assert weighted_loss(output, target, None, "huber", delta).item() == pytest.approx(sum(per_sample) / 2)
    weighted = weighted_loss(output, target, torch.tensor([1.0, 0.5]), "huber", delta).item()
    assert weighted == pytest.approx((per_sample[0] + 0.5 * per_sample[1]) / 2)
    small = elementwise_error(torch.zeros(1), torch.tensor([1e-3]), "huber", delta)
    assert small.item() == pytest.approx(1e-6, rel=1e-3)  # the squared error's scale for small errors
    assert torch.equal(weighted_loss(output, target), weighted_mse(output, target))
    assert weighted_mse(output, target).item() == pytest.approx((0.05**2 + 1 + 9 + 0) / 4)


def test_the_trainer_uses_the_huber_loss_when_asked():
    plain, huber = trainer(), trainer(loss="huber", huber_delta=0.5)
    batch = plain.micro_batch(0)
    noisy = plain.noise_scheduler.add_noise(batch.latents, batch.noise, batch.timesteps)
    with torch.no_grad():
        output = plain.denoiser(noisy, batch.timesteps, batch.text).sample
        mse, mse_metrics = plain.loss(0, with_perceptual=False)
        pseudo_huber, metrics = huber.loss(0, with_perceptual=False)
    torch.testing.assert_close(mse, weighted_mse(output, batch.noise))
    torch.testing.assert_close(pseudo_huber, weighted_loss(output, batch.noise, None, "huber", 0.5))
    assert "loss_mse" in mse_metrics and "loss_huber" in metrics and pseudo_huber < mse


# -- the EMA of the adapter ---------------------------------------------------------------------------------

EMA = {"ema_decay": 0.8, "ema_warmup": False, "dropout": 0.1}  # a short memory, so the EMA is far from the weights
STEPS = 4


@dataclass
class EmaRun:
    model: Trainer
    history: list[list[torch.Tensor]]  # the trained weights before the first step and after each
    checkpoint: Checkpoint  # as the run's checkpoint at step 2 holds it (through its files' bytes)


def _checkpoint_files(model: Trainer, step: int) -> Checkpoint:
    """A checkpoint as the store holds it: the adapter and the state through their safetensors and JSON bytes."""
    state = {**model.state_dict(), "step": step, "config": model.config.model_dump(mode="json")}
    adapter = tensor_files.load_bytes(tensor_files.save_bytes(lora.adapter_state(model.parts)), "adapter")
    return Checkpoint(step, adapter, tensor_files.read_state(*tensor_files.state_files(state), "state"))


@pytest.fixture(scope="module")
def ema_run() -> EmaRun:
    model, checkpoint = trainer(**EMA), None
    history = [weights(model)]
    for step in range(STEPS):
        model.step(step)
        history.append(weights(model))
        if step + 1 == 2:
            checkpoint = _checkpoint_files(model, 2)
    assert checkpoint is not None
    return EmaRun(model, history, checkpoint)


def test_the_ema_is_the_decayed_average_of_the_weights_after_each_step(ema_run):
    average = ema_run.history[0]
    for after in ema_run.history[1:]:
        average = [0.8 * a + 0.2 * w for a, w in zip(average, after, strict=True)]
    assert ema_run.model.ema is not None
    kept = ema_run.model.ema.average
    for expected, value in zip(average, kept, strict=True):
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(value, now) for value, now in zip(kept, ema_run.history[-1], strict=True))
    # The warm-up ramp (diffusers' EMAModel): 0.1 at the first step, rising, capped at the decay.
    ramp = AdapterEMA([], 0.999, warmup=True)
    assert ramp.decay_at(0) == pytest.approx(0.1) and ramp.decay_at(90) == pytest.approx(0.91)
    assert ramp.decay_at(100_000) == 0.999 and AdapterEMA([], 0.999, warmup=False).decay_at(0) == 0.999
    assert trainer().ema is None and "ema" not in trainer().state_dict()


def test_a_run_resumed_from_a_checkpoint_ends_with_the_same_ema_and_adapter_bit_for_bit(ema_run):
    resumed = trainer(**EMA)
    train.restore(resumed, ema_run.checkpoint)
    for step in range(2, STEPS):
        resumed.step(step)
    assert all(torch.equal(a, b) for a, b in zip(weights(resumed), ema_run.history[-1], strict=True))
    assert resumed.ema is not None and ema_run.model.ema is not None
    assert all(torch.equal(a, b) for a, b in zip(resumed.ema.average, ema_run.model.ema.average, strict=True))


def _same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_validation_and_both_adapter_files_take_the_ema_weights(ema_run, tmp_path):
    model = ema_run.model
    trained, ema = lora.adapter_state(model.parts), model.measured_adapter()
    assert not _same(ema, trained) and _same(lora.adapter_state(model.parts), trained)

    # Validation measures the EMA weights, and leaves the trained ones in place.
    held_out = latent_set(seed=1)
    measured = train.validate(model, held_out)
    assert _same(lora.adapter_state(model.parts), trained)
    plain = trainer()
    lora.load_adapter_state(plain.parts, ema)
    assert measured == pytest.approx(train.validate(plain, held_out), rel=1e-6)
    lora.load_adapter_state(plain.parts, trained)
    assert measured != pytest.approx(train.validate(plain, held_out), rel=1e-6)

    # The published adapter, in both layouts, is the EMA (the training is over: writing loads it into the parts).
    adapter, step = train.final_adapter(model, EarlyStopping(0, 0.0), STEPS)
    assert step == STEPS and _same(adapter, ema)
    files = {}
    for name, state in (("trained", trained), ("published", adapter)):
        kohya = train.write_adapter(model, state, str(tmp_path / name), {}, train.kohya_file_name(model.config))
        assert kohya is not None
        files[name] = (load_file(tmp_path / name / lora.ADAPTER_FILE), load_file(tmp_path / name / kohya))
    diffusers_layout, kohya_layout = files["published"]
    assert _same(diffusers_layout, ema)
    assert kohya_layout.keys() == files["trained"][1].keys() and not _same(kohya_layout, files["trained"][1])
