"""The train stage: objectives, deterministic batches, checkpoints, kill-and-resume equality, MLflow metrics."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest
import torch
import yaml
from adapter_files import adapter_weights
from diffusers import DDPMScheduler
from PIL import Image
from safetensors.torch import load

from artlora import contracts
from artlora.config import TrainConfig, with_inputs
from artlora.demo import tiny
from artlora.diffusion.families.unet import diffusion_target, predicted_x0
from artlora.diffusion.losses import PerceptualLoss
from artlora.io import storage, tracking
from artlora.stages.train import checkpoints
from artlora.stages.train import run as train
from artlora.stages.train.sampling import batch_for_step, sampler_position

pytestmark = pytest.mark.usefixtures("mlflow_db")


def test_batches_visit_every_view_once_per_epoch_one_bucket_at_a_time():
    sizes = [12, 5, 3]  # three buckets; batches of 4 -> 3 + 2 + 1 batches per epoch
    batches = [batch_for_step(sizes, 4, seed=3, step=step) for step in range(6)]
    seen = {(group, int(i)) for group, index in batches for i in index}
    assert seen == {(group, i) for group, size in enumerate(sizes) for i in range(size)}
    assert all(len(index) <= 4 for _, index in batches)
    assert [len(index) for _, index in batches] != [4, 4, 4, 4, 1, 3], "batch order is shuffled across buckets"
    first, again = batch_for_step(sizes, 4, 3, 7), batch_for_step(sizes, 4, 3, 7)
    assert first[0] == again[0] and torch.equal(first[1], again[1])
    next_epoch = [batch_for_step(sizes, 4, seed=3, step=step) for step in range(6, 12)]
    assert [(g, i.tolist()) for g, i in next_epoch] != [(g, i.tolist()) for g, i in batches]
    assert sampler_position(sizes, 4, 7) == (1, 1)


def test_the_trainer_draws_the_same_batches_as_batch_for_step():
    from artlora.data.latents import LatentGroup, LatentSet

    groups = tuple(LatentGroup(latents=torch.zeros(n, 4, 8, 8), text=torch.zeros(n, 77, 32)) for n in (12, 5, 3))
    config = TrainConfig(storage_root="s3://tests", base_model="tiny", batch_size=4, seed=3)
    trainer = train.Trainer(config, LatentSet(groups, torch.zeros(77, 32), "fp"), tiny.build_tiny_sd())
    for step in [*range(14), 3, 0]:  # across epochs, and back
        group, index = trainer.batch(step)
        expected = batch_for_step([12, 5, 3], 4, 3, step)
        assert group == expected[0] and torch.equal(index, expected[1])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predicted_x0_inverts_the_noising(prediction_type):
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    latents, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    timesteps = torch.tensor([10, 500, 990])
    noisy = scheduler.add_noise(latents, noise, timesteps)
    perfect = diffusion_target(scheduler, latents, noise, timesteps)
    torch.testing.assert_close(predicted_x0(scheduler, noisy, perfect, timesteps), latents, atol=1e-3, rtol=1e-3)
    if prediction_type == "v_prediction":
        assert not torch.allclose(perfect, noise)


def test_perceptual_term_is_zero_for_identical_images_and_positive_otherwise():
    vae = tiny.build_tiny_sd().vae
    loss = PerceptualLoss(vae, net="squeeze", backbone="random")
    latents = torch.randn(2, 4, 8, 8)
    assert loss(latents, latents).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(latents + torch.randn_like(latents), latents).item() > 0


def test_train_writes_adapter_checkpoints_and_metrics(small_config, latent_cache, store, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")  # MLflow's own setting (default 10 s)
    config = with_inputs(
        small_config.train, cache_uri=latent_cache, perceptual_weight=0.5, perceptual_net="squeeze", log_every=1
    )
    result = train.run(config)

    assert store.is_complete(result.adapter_uri)
    adapter = adapter_weights(store, result.adapter_uri)
    assert any("lora" in key for key in adapter) and all(key.startswith("unet.") for key in adapter)
    assert result.kohya_file == train.kohya_file_name(config) and result.adapter_step == config.max_steps
    kohya = load(store.get_bytes(storage.join(result.adapter_uri, result.kohya_file)))
    assert kohya and all(key.startswith("lora_unet_") for key in kohya)
    steps = [int(uri.rsplit("step-", 1)[1][:8]) for uri in store.list(train.run_uri(config)) if "step-" in uri]
    assert set(steps) == {2}  # checkpoints at every 2 steps before the end; the final adapter is the last

    tracking.configure()
    client = mlflow.tracking.MlflowClient()
    assert [m.step for m in client.get_metric_history(result.run_id, "loss")] == [1, 2, 3, 4]
    assert client.get_metric_history(result.run_id, "loss_perceptual")
    run = client.get_run(result.run_id)
    assert run.data.params["train.rank"] == str(config.rank)
    assert "system/cpu_utilization_percentage" in run.data.metrics, "system metrics during training"
    assert run.data.tags["artlora.dataset_fingerprint"]
    assert [m.step for m in client.get_metric_history(result.run_id, "lr")] == [1, 2, 3, 4]
    assert client.get_metric_history(result.run_id, "grad_norm") and client.get_metric_history(
        result.run_id, "images_per_s"
    )
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "adapter")}
    assert artifacts == {"adapter/pytorch_lora_weights.safetensors", f"adapter/{result.kohya_file}"}
    checkpoint_artifacts = {a.path for a in client.list_artifacts(result.run_id, "checkpoints/step-00000002")}
    assert checkpoint_artifacts == {"checkpoints/step-00000002/pytorch_lora_weights.safetensors"}

    again = train.run(config)  # a finished run is not trained twice
    assert again.run_id == result.run_id and again.resumed_from is None


def _train_command(config_path, overrides):
    args = [sys.executable, "-m", "artlora.cli", "train", "--config", str(config_path)]
    return args + [arg for item in overrides for arg in ("--set", item)]


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
    small_config, latent_cache, store, tmp_path
):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(small_config.model_dump(mode="json")))
    # Killed once its first checkpoint is stored, with most of its steps still to go (a margin for a loaded machine).
    overrides = [f"train.cache_uri={latent_cache}", "train.max_steps=20", "train.checkpoint_every=4"]
    killed_config = with_inputs(small_config.train, cache_uri=latent_cache, max_steps=20, checkpoint_every=4)
    root = train.run_uri(killed_config)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    process = subprocess.Popen(_train_command(config_path, overrides), env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while checkpoints.latest_step(store, root) is None:
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    assert not store.is_complete(storage.join(root, "adapter")), "the run finished before it was killed"
    killed_at = checkpoints.latest_step(store, root)

    # The rerun, in this process: the same stage function the CLI calls, found the killed run's checkpoint.
    result = train.run(killed_config)
    assert result.resumed_from == killed_at and 0 < killed_at < 20

    # The same training, never interrupted, under another storage root: the adapters must be equal.
    other_root = storage.join(small_config.storage_root, "uninterrupted")
    reference = train.run(with_inputs(killed_config, storage_root=other_root))
    resumed_weights = adapter_weights(store, result.adapter_uri)
    reference_weights = adapter_weights(store, reference.adapter_uri)
    assert resumed_weights.keys() == reference_weights.keys()
    for key, value in reference_weights.items():
        assert torch.equal(resumed_weights[key], value), key


def test_an_unfinished_checkpoint_is_never_resumed_from(store, bucket):
    root = storage.join(bucket, "runs", "partial")
    state = {"run_id": "x"}
    checkpoints.save_checkpoint(store, root, checkpoints.Checkpoint(2, {"w": torch.ones(1)}, state), keep=2)
    # A crash half-way through step 4's checkpoint: the adapter is there, the marker is not.
    store.put_bytes(storage.join(checkpoints.checkpoint_uri(root, 4), "adapter.safetensors"), b"partial")
    assert checkpoints.latest_step(store, root) == 2
    assert checkpoints.latest_checkpoint(store, root).step == 2
    checkpoints.save_checkpoint(store, root, checkpoints.Checkpoint(6, {"w": torch.ones(1)}, state), keep=1)
    remaining = {uri.rsplit("/", 2)[-2] for uri in store.list(storage.join(root, "checkpoints"))}
    assert remaining == {"step-00000006"}


def test_the_gallery_paints_while_training_and_leaves_the_adapter_as_it_would_be(small_config, latent_cache, store):
    config = with_inputs(small_config.train, cache_uri=latent_cache, learning_rate=0.01, sample_every=2)
    result = train.run(config)

    folder = contracts.gallery_folder(result.adapter_uri)
    index = store.get_json(storage.join(folder, contracts.GALLERY_INDEX))
    assert index["steps"] == [0, 2, 4] and index["prompts"] == list(config.sample_prompts)
    first, last = (
        np.asarray(Image.open(io.BytesIO(store.get_bytes(contracts.gallery_image(folder, step, 0))))) for step in (0, 4)
    )
    assert first.shape == (config.sample_resolution, config.sample_resolution, 3)
    assert not np.array_equal(first, last), "the adapter as trained paints otherwise than the base model"
    tracking.configure()
    logged = [a.path for a in mlflow.tracking.MlflowClient().list_artifacts(result.run_id, "images")]
    for number in range(len(config.sample_prompts)):
        # MLflow 3 files an image of key `a/b` at step n as `images/a~b+step+n+timestamp+...png`.
        key = re.escape(contracts.gallery_key(number).replace("/", "~"))
        steps = {int(m[1]) for path in logged if (m := re.fullmatch(rf"images/{key}\+step\+(\d+)\+.*\.png", path))}
        assert steps == {0, 2, 4}, (key, logged[:4])

    # The same training without the gallery (another storage root: the gallery is not part of the run's key).
    plain = train.run(with_inputs(config, sample_every=0, storage_root=storage.join(config.storage_root, "plain")))
    painted_weights, plain_weights = (
        adapter_weights(store, result.adapter_uri),
        adapter_weights(store, plain.adapter_uri),
    )
    assert painted_weights.keys() == plain_weights.keys()
    for key, value in plain_weights.items():
        assert torch.equal(painted_weights[key], value), key
    assert not store.exists(storage.join(contracts.gallery_folder(plain.adapter_uri), contracts.GALLERY_INDEX))
