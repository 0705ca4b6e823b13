"""The pretrained tiny base: built deterministically by its recipe, shipped while the recipe matches, able to
denoise and to paint what its captions say."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline

from artlora.demo import pretrained, sample_data, tiny, toy_scenes
from artlora.demo.tiny import SD_NOISE_SCHEDULE

# The recipe at toy size: every step of the build runs, in seconds.
TOY_RECIPE = {
    **pretrained.RECIPE,
    "vae_images": 32,
    "vae_textures": 32,
    "vae_steps": 3,
    "vae_full_steps": 1,
    "unet_images": 32,
    "unet_steps": 3,
    "heldout_images": 8,
}


@pytest.fixture(scope="module")
def base() -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(pretrained.ensure(), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_shipped_base_was_built_by_the_current_recipe():
    """Changing the recipe (or BUILD_VERSION) without rebuilding the shipped copy fails here: rebuild it with
    `artlora tiny-model --pretrained --rebuild --out src/artlora/demo/tiny_pretrained`."""
    record = json.loads((pretrained.COMMITTED / pretrained.BUILD_RECORD).read_text())
    assert record["recipe_digest"] == pretrained.recipe_digest()
    assert record["recipe"] == pretrained.RECIPE
    assert pretrained.ensure() == pretrained.COMMITTED


@pytest.fixture
def toy_measures(monkeypatch):
    """The build's per-style VAE figures on 2 images a style instead of 40: half of a toy build's time was those."""
    monkeypatch.setattr(pretrained, "STYLE_HELDOUT_COUNT", 2)


@pytest.mark.usefixtures("toy_measures")
def test_a_build_is_deterministic(tmp_path):
    first = pretrained.build(tmp_path / "a", TOY_RECIPE, progress=lambda _: None)
    pretrained.build(tmp_path / "b", TOY_RECIPE, progress=lambda _: None)
    weights = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.safetensors"))
    assert len(weights) == 3  # text encoder, UNet, VAE
    for name in weights:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert first["recipe_digest"] == pretrained.recipe_digest(TOY_RECIPE) != pretrained.recipe_digest()
    assert first["scaling_factor"] == pytest.approx(1 / first["latent_std_unscaled"])


@pytest.mark.usefixtures("toy_measures")
def test_a_changed_recipe_is_built_once_into_the_cache(monkeypatch, work_dir):
    monkeypatch.setattr(pretrained, "RECIPE", TOY_RECIPE)
    builds = []
    real_build = pretrained.build
    monkeypatch.setattr(pretrained, "build", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    folder = pretrained.ensure()
    assert folder != pretrained.COMMITTED and pretrained.recipe_digest(TOY_RECIPE) in str(folder)
    assert pretrained.ensure() == folder and len(builds) == 1  # reused, not built again
    assert not [p for p in folder.parent.iterdir() if p != folder]  # no half-built folder left beside it
    StableDiffusionPipeline.from_pretrained(folder, use_safetensors=True)  # a whole diffusers folder


@torch.no_grad()
def _heldout_loss(pipe) -> tuple[float, float]:
    """v-prediction loss of `pipe` on scenes it never saw, and the zero predictor's, at fixed noise."""
    images, captions = toy_scenes.dataset(48, 64, seed=7, **pretrained.RECIPE["unet_scenes"])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    ids = pipe.tokenizer(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    text = pipe.text_encoder(ids)[0]
    scheduler = DDPMScheduler(**SD_NOISE_SCHEDULE, prediction_type="v_prediction")
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    loss = zero = 0.0
    for t in (100, 500, 900):
        steps = torch.full((len(latents),), t)
        target = scheduler.get_velocity(latents, noise, steps)
        loss += torch.nn.functional.mse_loss(
            pipe.unet(scheduler.add_noise(latents, noise, steps), steps, text).sample, target
        )
        zero += target.square().mean()
    return float(loss) / 3, float(zero) / 3


def test_the_base_denoises_far_better_than_predicting_nothing(base):
    loss, zero = _heldout_loss(base)
    assert loss < 0.4 * zero
    random_loss, random_zero = _heldout_loss(tiny.build_tiny_sd(prediction_type="v_prediction"))
    assert random_loss > 0.9 * random_zero  # the random model explains nothing: the pretraining did this


def test_the_vae_carries_every_demo_style(base):
    """Held-out images of each demo style (which the base never trained on: the LoRA is to teach them) come back
    through the VAE at 20 dB PSNR or better: their dots, fine lines and hard edges survive encoding, so a LoRA
    can learn them. The recipe's 40-image figures are in build.json; these are six other images per style."""
    psnr = pretrained.style_psnr(base.vae, count=6, start=2000)
    assert set(psnr) == set(sample_data.STYLES)
    assert min(psnr.values()) >= 20.0, {style: round(db, 1) for style, db in psnr.items()}


def test_the_base_paints_what_the_caption_says(base):
    """A plain background of a named colour comes out in that colour: images, not noise."""
    for name in ("blue", "yellow", "green"):
        image = base(
            f"a {name} background",
            num_inference_steps=20,
            guidance_scale=5.0,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images[0]
        mean = image.reshape(-1, 3).mean(0) * 255
        distances = {colour: np.linalg.norm(mean - rgb) for colour, rgb in toy_scenes.COLOURS.items()}
        assert min(distances, key=distances.get) == name, (name, mean.round())
        assert image.std(axis=(0, 1)).mean() < 0.15  # plain, not coloured noise
