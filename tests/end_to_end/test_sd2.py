"""Stable Diffusion 2.x end to end on the tiny in-code SD 2.x (wider GELU text encoder, linear attention
projections, v-prediction): augment, a few training steps, evaluation, and both adapter files loaded back."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from small_configs import small_config_for

from artlora.config import with_inputs
from artlora.demo import tiny
from artlora.diffusion import loading
from artlora.stages.augment import run as augment
from artlora.stages.evaluate import run as evaluate
from artlora.stages.ingest import run as ingest
from artlora.stages.train import lora
from artlora.stages.train import run as train

# End to end: `pytest -m "not slow"` leaves these out for a quick loop; `make test` runs them.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_db")]


def generate(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(3)
    return pipe("a woodcut", height=32, width=32, num_inference_steps=2, generator=generator, output_type="np").images


@pytest.fixture(scope="module")
def sd2_dir(tmp_path_factory) -> Path:
    return tiny.save_tiny(tmp_path_factory.mktemp("tiny-sd2") / "model", "sd2")


def test_tiny_sd2_has_the_sd2_architecture(sd2_dir):
    pipe = loading.load_pipeline(str(sd2_dir))
    assert pipe.unet.config.use_linear_projection and pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size != 32  # not SD 1.x's width
    assert pipe.text_encoder.config.hidden_act == "gelu"


def test_sd2_v_prediction_trains_evaluates_and_exports_end_to_end(bucket, sd2_dir, sample_folder, store):
    config = small_config_for(bucket, sd2_dir, sample_folder, "train.max_steps=3", "train.learning_rate=0.01")
    dataset = ingest.run(config.ingest)
    cache = augment.run(with_inputs(config.augment, dataset_uri=dataset.dataset_uri)).cache_uri
    result = train.run(with_inputs(config.train, cache_uri=cache))
    evaluated = evaluate.run(
        with_inputs(config.evaluate, adapter_uri=result.adapter_uri, cache_uri=cache, run_id=result.run_id)
    )
    assert 0 < evaluated.val_loss_lora != evaluated.val_loss_base > 0

    pipe, from_kohya = loading.load_pipeline(str(sd2_dir)), loading.load_pipeline(str(sd2_dir))
    before = generate(pipe)
    with tempfile.TemporaryDirectory() as adapter_dir:
        store.download_dir(result.adapter_uri, adapter_dir)
        kohya = Path(adapter_dir) / result.kohya_file
        metadata = lora.read_metadata(kohya, prefix="")
        pipe.load_lora_weights(adapter_dir)
        from_kohya.load_lora_weights(adapter_dir, weight_name=result.kohya_file)
    assert (metadata["ss_base_model_version"], metadata["ss_v2"], metadata["ss_v_parameterization"]) == (
        "sd_v2",
        "True",
        "True",
    )
    assert metadata["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert not np.allclose(before, generate(pipe), atol=1e-6)
    np.testing.assert_allclose(generate(from_kohya), generate(pipe), atol=1e-5)  # both layouts, one adapter
