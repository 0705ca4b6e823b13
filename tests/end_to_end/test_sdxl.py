"""What is particular to SDXL, on the tiny in-code SDXL: build/save/load, both text encoders in the cache
identity, the augment stage's pooled embeds and time ids, caption dropout of the pooled embeds, and a cache of the
other architecture refused. The stages, generate, pyfunc, resume and export run for every family in
test_families_end_to_end.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from small_configs import small_config_for

from artlora.config import TrainConfig, with_inputs
from artlora.data.latent_cache import load_split
from artlora.data.latents import LatentGroup, LatentSet
from artlora.demo import tiny
from artlora.diffusion import families, loading
from artlora.diffusion.families import sd1
from artlora.stages.augment import cache_keys
from artlora.stages.augment import run as augment
from artlora.stages.ingest import run as ingest
from artlora.stages.train.errors import TrainError
from artlora.stages.train.trainer import Trainer

# End to end: `pytest -m "not slow"` leaves these out for a quick loop; `make test` runs them.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_db")]


def generate(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "a woodcut of a tree",
        height=32,
        width=32,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
    ).images


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory) -> Path:
    return tiny.save_tiny(tmp_path_factory.mktemp("tiny-sdxl") / "model", "sdxl")


@pytest.fixture
def sdxl_config(bucket, sdxl_dir, sample_folder):
    """The small test config (as conftest's small_config) on the tiny SDXL."""
    return small_config_for(bucket, sdxl_dir, sample_folder, "train.max_steps=3", "train.caption_dropout=0.5")


@pytest.fixture
def sdxl_cache(sdxl_config) -> str:
    dataset = ingest.run(sdxl_config.ingest)
    return augment.run(with_inputs(sdxl_config.augment, dataset_uri=dataset.dataset_uri)).cache_uri


def test_tiny_sdxl_is_deterministic_and_saves_and_loads(sdxl_dir):
    built = tiny.build_tiny_sdxl(seed=0)
    assert isinstance(built, StableDiffusionXLPipeline) and families.of(built).name == "sdxl"
    assert families.of(tiny.build_tiny_sd()).name == "sd1"
    unet = built.unet.config
    assert unet.cross_attention_dim == built.text_encoder.config.hidden_size + built.text_encoder_2.config.hidden_size
    assert unet.projection_class_embeddings_input_dim == (
        6 * unet.addition_time_embed_dim + built.text_encoder_2.config.projection_dim
    )
    again, other = tiny.build_tiny_sdxl(seed=0), tiny.build_tiny_sdxl(seed=1)
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert loading.module_fingerprint(getattr(built, part)) == loading.module_fingerprint(getattr(again, part))
    assert loading.module_fingerprint(built.unet) != loading.module_fingerprint(other.unet)

    loaded = loading.load_pipeline(str(sdxl_dir))
    assert isinstance(loaded, StableDiffusionXLPipeline)
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert loading.module_fingerprint(getattr(built, part)) == loading.module_fingerprint(getattr(loaded, part))
    np.testing.assert_allclose(generate(built), generate(loaded), atol=1e-5)


def test_sdxl_text_identity_covers_both_encoders():
    base, other = tiny.build_tiny_sdxl(seed=0), tiny.build_tiny_sdxl(seed=1)
    identity = cache_keys.pipeline_text_identity(base)
    assert identity != sd1.text_identity(base.text_encoder, base.tokenizer)
    base.text_encoder_2 = other.text_encoder_2  # only the second encoder differs
    assert cache_keys.pipeline_text_identity(base) != identity


def test_augment_caches_pooled_embeds_and_time_ids_for_sdxl(sdxl_config, sdxl_cache, store):
    index = store.get_json(sdxl_cache)
    assert index["architecture"] == "sdxl"
    views = sdxl_config.augment.views_per_image
    for entry in index["entries"]:
        ids = entry["time_ids"]
        assert len(ids) == views and all(len(row) == 6 for row in ids)
        width, height = entry["bucket"]
        assert all(row[4:] == [height, width] for row in ids)  # the target size is the bucket
        assert all(min(row[2:4]) >= 0 for row in ids)

    pipe = loading.load_pipeline(sdxl_config.base_model)
    data = load_split(sdxl_cache, "train")
    assert data.architecture == "sdxl" and data.empty_pooled.shape == (pipe.text_encoder_2.config.projection_dim,)
    group = data.groups[0]
    assert group.pooled.shape == (len(group), 32) and group.time_ids.shape == (len(group), 6)
    assert group.text.shape[1:] == (77, 64)  # both encoders' states, concatenated


def sdxl_latent_set() -> LatentSet:
    """Random SDXL-shaped cache contents: 64-wide caption states, 32-wide pooled embeds, time ids."""
    gen = torch.Generator().manual_seed(0)
    n = 8
    ids = torch.tensor([[64.0, 48, 3, 0, 32, 32]]).expand(n, 6).clone()
    group = LatentGroup(
        latents=torch.randn(n, 4, 8, 8, generator=gen),
        text=torch.randn(n, 77, 64, generator=gen),
        bucket=(32, 32),
        pooled=torch.randn(n, 32, generator=gen),
        time_ids=ids,
    )
    return LatentSet((group,), torch.zeros(77, 64), "fp", empty_pooled=torch.zeros(32), architecture="sdxl")


def test_sdxl_caption_dropout_drops_the_pooled_embeds_with_the_caption():
    config = TrainConfig(storage_root="s3://tests", base_model="tiny-sdxl", batch_size=4, caption_dropout=0.5)
    trainer = Trainer(config, sdxl_latent_set(), tiny.build_tiny_sdxl())
    seen = []
    for index in range(6):
        batch = trainer.micro_batch(index)
        added = trainer.family.conditioning(batch.group, batch.rows, batch.pooled)
        assert set(added) == {"text_embeds", "time_ids"} and added["time_ids"].shape == (4, 6)
        for text, pooled in zip(batch.text, added["text_embeds"], strict=True):
            empty_text, empty_pooled = not text.any(), not pooled.any()
            assert empty_text == empty_pooled
            seen.append(empty_text)
    assert any(seen) and not all(seen)
    loss, _ = trainer.loss(0, with_perceptual=False)
    assert torch.isfinite(loss)


def test_a_cache_of_the_other_architecture_is_refused_clearly():
    config = TrainConfig(storage_root="s3://tests", base_model="tiny", batch_size=4)
    with pytest.raises(TrainError, match="made for SDXL but the base model is Stable Diffusion"):
        Trainer(config, sdxl_latent_set(), tiny.build_tiny_sd())
    sd1 = LatentSet(
        (LatentGroup(latents=torch.zeros(4, 4, 8, 8), text=torch.zeros(4, 77, 64)),), torch.zeros(77, 64), "fp"
    )
    with pytest.raises(TrainError, match="base model is SDXL"):
        Trainer(config, sd1, tiny.build_tiny_sdxl())
