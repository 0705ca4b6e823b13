"""SD 3.5 and Flux.1 end to end on their tiny in-code bases, through the same stages as SD 1.x and SDXL: the base
saved and loaded as a diffusers folder, augment's text cache (T5 length, pooled embeddings, the family in the
index; a rerun reuses everything), a few training steps with both adapter files, evaluation with the adapter
loaded back, and painting with the trained style (Painter, as `artlora generate` and the pyfunc paint)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from small_configs import small_config_for

from artlora.config import with_inputs
from artlora.data.latent_cache import load_split, read_shard
from artlora.demo import tiny
from artlora.diffusion import families, loading
from artlora.diffusion.adapters import adapter_file
from artlora.generate.painting import Painter, Settings
from artlora.stages.augment import run as augment
from artlora.stages.evaluate import run as evaluate
from artlora.stages.ingest import run as ingest
from artlora.stages.train import run as train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_db")]
T5_LENGTH = 16


@pytest.fixture(scope="module", params=["sd3", "flux"])
def family_dir(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, tiny.save_tiny(tmp_path_factory.mktemp(f"tiny-{request.param}") / "model", request.param)


@pytest.fixture
def config(bucket, family_dir, sample_folder):
    _, folder = family_dir
    extra = (
        "train.max_steps=3",
        "train.learning_rate=0.02",
        "train.caption_dropout=0.5",
        f"augment.max_t5_length={T5_LENGTH}",
    )
    return small_config_for(bucket, folder, sample_folder, *extra, "train.target_modules=[attention, context]")


def test_a_tiny_transformer_base_runs_the_stages(family_dir, config, store):
    name, folder = family_dir
    pipe = loading.load_pipeline(str(folder))
    assert families.of(pipe).name == name

    dataset = ingest.run(config.ingest)
    cache_uri = augment.run(with_inputs(config.augment, dataset_uri=dataset.dataset_uri)).cache_uri
    index = store.get_json(cache_uri)
    assert index["architecture"] == name and all("time_ids" not in entry for entry in index["entries"])
    data = load_split(cache_uri, "train")
    assert data.architecture == name and data.groups[0].latents.shape[1] == 16  # 16-channel latents
    caption = index["entries"][0]["caption"]
    with torch.no_grad():
        if name == "sd3":
            hidden, _, pooled, _ = pipe.encode_prompt(
                caption, None, None, do_classifier_free_guidance=False, max_sequence_length=T5_LENGTH
            )
        else:
            hidden, pooled, _ = pipe.encode_prompt(caption, None, max_sequence_length=T5_LENGTH)
    cached = read_shard(store, index["entries"][0]["text"])
    torch.testing.assert_close(cached["hidden"], hidden[0])
    torch.testing.assert_close(cached["pooled"], pooled[0])
    again = augment.run(with_inputs(config.augment, dataset_uri=dataset.dataset_uri))
    assert again.cache_uri == cache_uri and again.encoded_views == 0 and again.encoded_captions == 0

    trained = train.run(with_inputs(config.train, cache_uri=cache_uri))
    assert store.is_complete(trained.adapter_uri) and trained.kohya_file
    evaluated = evaluate.run(
        with_inputs(config.evaluate, adapter_uri=trained.adapter_uri, cache_uri=cache_uri, run_id=trained.run_id)
    )
    assert evaluated.val_loss_base > 0 and evaluated.val_loss_base != evaluated.val_loss_lora

    settings = Settings(steps=2, guidance=3.0)
    with tempfile.TemporaryDirectory() as adapter_dir:
        store.download_dir(trained.adapter_uri, adapter_dir)
        painted = [
            np.asarray(
                Painter(str(folder), adapter_file(adapter_dir, layout), "cpu", "fp32").paint("a tree", 0, settings)
            )
            for layout in ("diffusers", "kohya")
        ]
        without = Settings(steps=2, guidance=3.0, strength=0.0)  # the adapter at weight 0: the base model
        base = np.asarray(Painter(str(folder), adapter_file(adapter_dir), "cpu", "fp32").paint("a tree", 0, without))
    assert (base != painted[0]).any()  # the style is painted (test_families checks how exactly)
    np.testing.assert_allclose(painted[0].astype(float), painted[1].astype(float), atol=1)  # one adapter, two files
