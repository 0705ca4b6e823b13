"""The model families: each base is recognised by its family, the flow-matching objective is checked against its
definition and diffusers' own helpers, and the transformer families (tiny SD 3.5 and Flux.1, built in code) cache
the caption states their pipelines make, learn in a few steps, and export adapters that paint the same image
from either layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift as diffusers_shift
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3
from safetensors.torch import load_file

from artlora.config import ConfigError, TrainConfig
from artlora.data.latents import LatentGroup, LatentSet
from artlora.demo import tiny, tiny_transformers
from artlora.diffusion import adapters, families, loading
from artlora.diffusion.families import flow
from artlora.diffusion.heldout import heldout_loss
from artlora.diffusion.losses import weighted_mse
from artlora.diffusion.vae import decode_latents, encode_latents
from artlora.stages.train import kohya, lora
from artlora.stages.train.errors import TrainError
from artlora.stages.train.preservation import adapters_off
from artlora.stages.train.trainer import DeviceModel, Trainer

CAPTIONS = ("a red cat in ink", "two boats at dusk, watercolour")
T5_LENGTH = 16  # short T5 states keep the tiny runs fast
BUILD = {"sd3": tiny_transformers.build_tiny_sd3, "flux": tiny_transformers.build_tiny_flux}


@pytest.fixture(scope="module", params=["sd3", "flux"])
def name(request) -> str:
    return request.param


def test_each_tiny_base_is_recognised_by_its_family():
    built = {"sd1": tiny.build_tiny_sd(), "sdxl": tiny.build_tiny_sdxl(), **{n: BUILD[n]() for n in BUILD}}
    for name, pipe in built.items():
        family = families.of(pipe)
        assert family.name == name
        assert families.for_pipeline_name(type(pipe).__name__) is family
        assert isinstance(pipe, family.pipeline_class())
    assert families.of(tiny.build_tiny_sd2()).name == "sd1"  # SD 2.x is the 1.x family


# -- flow matching against its definition ----------------------------------------------------------------


def test_flow_noising_target_and_x0_follow_the_definition():
    family, gen = families.named("sd3"), torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 16, 8, 8, generator=gen), torch.randn(3, 16, 8, 8, generator=gen)
    timesteps = torch.tensor([10.0, 500.0, 990.0])
    sigma = (timesteps / 1000).view(-1, 1, 1, 1)
    noisy = family.add_noise(None, x0, noise, timesteps)
    torch.testing.assert_close(noisy, (1 - sigma) * x0 + sigma * noise)
    target = family.target(None, x0, noise, timesteps)
    torch.testing.assert_close(target, noise - x0)
    torch.testing.assert_close(family.predicted_x0(None, noisy, target, timesteps), x0, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("density", ["logit_normal", "mode", "uniform"])
def test_timesteps_are_diffusers_density_shifted_as_the_scheduler_shifts(density):
    config = TrainConfig(storage_root="s3://tests", base_model="x", timestep_density=density, logit_mean=0.3)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    drawn = families.named("sd3").sample_timesteps(scheduler, torch.Size((64, 16, 32, 32)), _gen(), config)
    u = compute_density_for_timestep_sampling(density, 64, 0.3, 1.0, 1.29, generator=_gen()).clamp(1e-5, 1 - 1e-5)
    torch.testing.assert_close(drawn, 3.0 * u / (1 + 2.0 * u) * 1000)
    assert drawn.min() > 0 and drawn.max() < 1000


def test_the_shifts_are_the_schedulers_own():
    """SD 3.5's fixed shift and Flux.1's resolution-dependent one give the sigmas their schedulers give."""
    plain = torch.linspace(1.0, 1 / 20, 20)
    fixed = FlowMatchEulerDiscreteScheduler(shift=3.0)
    fixed.set_timesteps(sigmas=plain.numpy())
    torch.testing.assert_close(flow.shift_sigmas(fixed, plain, 4096), fixed.sigmas[:-1], atol=1e-6, rtol=1e-6)
    dynamic = tiny_transformers.build_tiny_flux().scheduler
    tokens = 1024  # a 1024 px image: 128x128 latents in 2x2 patches
    mu = diffusers_shift(tokens, 256, 4096, 0.5, 1.15)
    assert flow.calculate_shift(tokens, dynamic.config) == pytest.approx(mu)
    dynamic.set_timesteps(sigmas=plain.numpy(), mu=mu)
    torch.testing.assert_close(flow.shift_sigmas(dynamic, plain, tokens), dynamic.sigmas[:-1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("scheme", ["sigma_sqrt", "cosmap"])
def test_loss_weights_are_diffusers_sd3_weights(scheme):
    config = TrainConfig(storage_root="s3://tests", base_model="x", loss_weighting=scheme)
    timesteps = torch.tensor([50.0, 400.0, 900.0])
    weights = families.named("flux").loss_weights(None, timesteps, config)
    torch.testing.assert_close(weights, compute_loss_weighting_for_sd3(scheme, timesteps / 1000))
    plain = TrainConfig(storage_root="s3://tests", base_model="x")
    assert families.named("flux").loss_weights(None, timesteps, plain) is None


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)


# -- the transformer families on their tiny bases --------------------------------------------------------


def test_the_cache_stores_the_states_the_pipeline_encodes(name):
    pipe, family = BUILD[name](), families.named(name)
    options = families.TextOptions(max_t5_length=T5_LENGTH)
    rows = family.text_encoders(pipe, options).states(list(CAPTIONS))
    with torch.no_grad():
        if name == "sd3":
            hidden, _, pooled, _ = pipe.encode_prompt(
                list(CAPTIONS), None, None, do_classifier_free_guidance=False, max_sequence_length=T5_LENGTH
            )
        else:
            hidden, pooled, _ = pipe.encode_prompt(list(CAPTIONS), None, max_sequence_length=T5_LENGTH)
    assert [set(row) for row in rows] == [{"hidden", "pooled"}] * 2
    torch.testing.assert_close(torch.stack([row["hidden"] for row in rows]), hidden)
    torch.testing.assert_close(torch.stack([row["pooled"] for row in rows]), pooled)
    assert hidden.shape[1] == T5_LENGTH + (77 if name == "sd3" else 0)
    other = family.text_identity(pipe, families.TextOptions(max_t5_length=T5_LENGTH + 1))
    assert family.text_identity(pipe, options) != other  # the T5 length is part of the cache key


def test_sd3_without_t5_caches_zeros_in_its_place():
    pipe, family = BUILD["sd3"](), families.named("sd3")
    rows = family.text_encoders(pipe, families.TextOptions(max_t5_length=T5_LENGTH, t5=False)).states(["a cat"])
    with_t5 = family.text_encoders(pipe, families.TextOptions(max_t5_length=T5_LENGTH)).states(["a cat"])
    assert rows[0]["hidden"].shape == with_t5[0]["hidden"].shape
    assert not rows[0]["hidden"][77:].any() and with_t5[0]["hidden"][77:].any()
    torch.testing.assert_close(rows[0]["hidden"][:77], with_t5[0]["hidden"][:77])
    torch.testing.assert_close(rows[0]["pooled"], with_t5[0]["pooled"])


def test_sd3_without_t5_loads_without_it(tmp_path):
    folder = tiny.save_tiny(tmp_path / "sd3", "sd3")
    options = families.TextOptions(max_t5_length=T5_LENGTH, t5=False)
    light, full = loading.load_pipeline(str(folder), text=options), loading.load_pipeline(str(folder))
    assert light.text_encoder_3 is None and full.text_encoder_3 is not None
    cached = loading.load_pipeline(str(folder), text=families.TextOptions(encoders=False))  # what train loads
    assert all(getattr(cached, part) is None for part in ("text_encoder", "text_encoder_2", "text_encoder_3"))
    assert families.of(cached).name == "sd3" and cached.transformer is not None
    caching = loading.load_pipeline(str(folder), text=families.TextOptions(denoiser=False))  # what augment loads
    assert caching.transformer is None and families.of(caching).name == "sd3"
    family = families.named("sd3")
    assert family.text_identity(caching, options) == family.text_identity(full, options)
    assert family.text_identity(light, options) == family.text_identity(full, options)  # the same cache either way
    rows, again = (family.text_encoders(pipe, options).states(["a cat"]) for pipe in (light, full))
    torch.testing.assert_close(rows[0]["hidden"], again[0]["hidden"])


def latent_set(name: str, pipe) -> LatentSet:
    """Eight random 16-channel latents (64 px) with two real captions' cached states."""
    family, gen = families.named(name), torch.Generator().manual_seed(0)
    states = family.text_encoders(pipe, families.TextOptions(max_t5_length=T5_LENGTH)).states([*CAPTIONS, ""])
    rows = [states[i % 2] for i in range(8)]
    group = LatentGroup(
        latents=torch.randn(8, 16, 16, 16, generator=gen),
        text=torch.stack([row["hidden"] for row in rows]),
        pooled=torch.stack([row["pooled"] for row in rows]),
        captions=tuple(CAPTIONS[i % 2] for i in range(8)),
    )
    return LatentSet((group,), states[2]["hidden"], "fp", states[2]["pooled"], architecture=name)


def trained(name: str, steps: int, **changes) -> tuple[Trainer, LatentSet]:
    pipe = BUILD[name]()
    data = latent_set(name, pipe)
    values = {"rank": 4, "alpha": 4.0, "learning_rate": 3e-3, "max_steps": 100, "batch_size": 4, "seed": 0}
    config = TrainConfig(storage_root="s3://tests", base_model=f"tiny-{name}", **{**values, **changes})
    trainer = Trainer(config, data, pipe)
    for step in range(steps):
        trainer.step(step)
    return trainer, data


def test_a_few_training_steps_lower_the_heldout_loss(name):
    trainer, data = trained(name, 0, learning_rate=1e-2, target_modules=("attention", "context", "feed_forward"))

    def measure() -> float:
        with trainer.evaluating():
            scheduler = trainer.noise_scheduler
            return heldout_loss(trainer.family, DeviceModel(trainer), scheduler, data, (200, 500, 800), 0)

    before = measure()
    for step in range(30):
        trainer.step(step)
    after = measure()
    assert after < 0.9 * before, (before, after)


def test_the_perceptual_term_decodes_the_flow_x0_through_the_shifted_vae(name):
    """Training latents are (mean - shift) * scale; the perceptual term must decode them back to what the VAE
    decodes from its own mean, and add a finite LPIPS term to a flow-matching step."""
    pipe = BUILD[name]()
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        mean = pipe.vae.encode(pixels).latent_dist.mean
        direct = pipe.vae.decode(mean).sample.clamp(-1, 1)
        through = decode_latents(pipe.vae, encode_latents(pipe.vae, pixels))
    assert pipe.vae.config.shift_factor  # the test covers a shifted VAE
    torch.testing.assert_close(through, direct, atol=1e-5, rtol=1e-5)
    config = {"perceptual_weight": 0.5, "perceptual_net": "squeeze", "perceptual_backbone": "random"}
    trainer, _ = trained(name, 0, **config)
    loss, metrics = trainer.loss(0, with_perceptual=True)
    assert torch.isfinite(loss) and "loss_perceptual" in metrics
    assert loss.item() == pytest.approx(metrics["loss_mse"].item() + 0.5 * metrics["loss_perceptual"].item())


def test_output_preservation_goes_through_the_familys_seam(name):
    """The preservation term on a transformer: the target is the base's prediction (LoRA off) for the cache's empty
    caption with its pooled embedding; a prompt the base would encode otherwise than the cache (here: T5 cut at
    16 tokens) is refused rather than mixed in."""
    trainer, data = trained(name, 2, learning_rate=1e-2, preservation_weight=1.0)
    family, scheduler, index = trainer.family, trainer.noise_scheduler, 3
    batch = trainer.micro_batch(index)
    noisy = family.add_noise(scheduler, batch.latents, batch.noise, batch.timesteps)
    weights = family.loss_weights(scheduler, batch.timesteps, trainer.config)
    text, pooled = data.empty_text.expand(len(noisy), -1, -1), data.empty_pooled.expand(len(noisy), -1)
    with torch.no_grad():
        term = trainer.preservation.term(trainer, batch, noisy, index, weights)
        conditioning = family.conditioning(batch.group, batch.rows, pooled)
        adapted = family.predict(trainer.denoiser, noisy, batch.timesteps, text, conditioning)
        with adapters_off(trainer.denoiser):
            base = family.predict(trainer.denoiser, noisy, batch.timesteps, text, conditioning)
    assert weighted_mse(adapted, base) > 0, "the adapter has moved away from the base"
    torch.testing.assert_close(term, weighted_mse(adapted, base, weights), rtol=1e-4, atol=1e-8)
    with pytest.raises(TrainError, match="preservation_prompts"):
        trained(name, 0, preservation_weight=1.0, preservation_prompts=("a cat",))


def test_a_resumed_run_takes_the_steps_of_an_uninterrupted_one(name):
    """Timesteps drawn from the density come from (seed, micro-batch) alone, so a run restored from its adapter
    and optimizer state after 2 steps ends where a run of 4 steps does."""
    straight, _ = trained(name, 4)
    first, _ = trained(name, 2)
    adapter, state = lora.adapter_state(first.parts), first.state_dict()
    resumed, _ = trained(name, 0)
    lora.load_adapter_state(resumed.parts, adapter)
    resumed.load_state_dict(state)
    for step in (2, 3):
        resumed.step(step)
    expected, got = lora.adapter_state(straight.parts), lora.adapter_state(resumed.parts)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value)


def test_settings_of_the_other_objective_are_refused_not_ignored():
    flow_setting = TrainConfig(storage_root="s3://tests", base_model="x", timestep_density="mode")
    with pytest.raises(ConfigError, match="train.timestep_density: a flow-matching setting"):
        families.named("sdxl").check_config(flow_setting)
    families.named("sdxl").check_config(
        TrainConfig.model_validate(flow_setting.model_dump() | {"timestep_density": "logit_normal"})
    )
    with pytest.raises(ConfigError, match="train.min_snr_gamma"):
        families.named("sd3").check_config(TrainConfig(storage_root="s3://tests", base_model="x", min_snr_gamma=5.0))
    with pytest.raises(ConfigError, match="train.train_text_encoder"):
        families.named("flux").check_config(
            TrainConfig(storage_root="s3://tests", base_model="x", train_text_encoder=True)
        )


def test_the_wrong_familys_cache_is_refused(name):
    from artlora.stages.train.errors import TrainError

    pipe = BUILD[name]()
    data = latent_set(name, pipe)
    with pytest.raises(TrainError, match="made for .* but the base model is"):
        Trainer(TrainConfig(storage_root="s3://tests", base_model="x"), data, tiny.build_tiny_sd())


def paint(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "a red cat",
        num_inference_steps=2,
        height=64,
        width=64,
        guidance_scale=3.0,
        max_sequence_length=T5_LENGTH,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images


def test_export_and_load_back_paint_the_same_image(name, tmp_path):
    trainer, _ = trained(name, 4, alpha=2.0, learning_rate=5e-2, target_modules=("attention", "context", "modulation"))
    trainer.denoiser.eval()
    folder = tmp_path / "adapter"
    lora.save_adapter(trainer.parts, folder)
    single = kohya.save_kohya(trainer.denoiser, tmp_path / "style.safetensors", "flow")
    keys = load_file(single)
    assert keys and all(key.startswith("transformer.") for key in keys)
    assert any(".attn.add_q_proj." in key for key in keys) and any("norm1.linear" in key for key in keys)

    live = BUILD[name]()
    live.transformer = trainer.denoiser.float()
    from_folder, from_file, base = BUILD[name](), BUILD[name](), BUILD[name]()
    from_folder.load_lora_weights(str(folder))
    from_file.load_lora_weights(str(tmp_path), weight_name=single.name)
    expected = paint(live)
    assert not np.allclose(paint(base), expected, atol=1e-4)
    np.testing.assert_allclose(paint(from_folder), expected, atol=1e-5)
    np.testing.assert_allclose(paint(from_file), expected, atol=1e-5)


def test_a_family_that_misses_a_method_of_the_interface_cannot_be_made():
    class Unfinished(families.SD1):
        pipeline_class = families.Family.pipeline_class  # the interface's own: not implemented

    with pytest.raises(TypeError, match="abstract method pipeline_class"):
        Unfinished()


def test_a_lokr_adapter_loads_back_through_peft_and_has_no_single_file(name, tmp_path):
    """LoKr on the transformer families: the diffusers-layout file (which load_lora_weights cannot read) loads
    through artlora's loader and paints the trained model's image; the single file is refused (no LyCORIS
    convention for these bases that could be checked)."""
    trainer, _ = trained(name, 3, adapter="lokr", alpha=2.0, learning_rate=5e-2, target_modules=("attention",))
    trainer.denoiser.eval()
    lora.save_adapter(trainer.parts, tmp_path)
    with pytest.raises(kohya.UnsupportedAdapterError, match="LoKr/LoHa"):
        kohya.save_kohya(trainer.denoiser, tmp_path / "style.safetensors", "flow")
    live, loaded = BUILD[name](), BUILD[name]()
    live.transformer = trainer.denoiser.float()
    adapters.load_adapter(loaded, adapters.adapter_file(tmp_path))
    expected = paint(live)
    assert not np.allclose(paint(BUILD[name]()), expected, atol=1e-4)
    np.testing.assert_allclose(paint(loaded), expected, atol=1e-5)
