"""Validation during training, early stopping and the best adapter; checkpoint retention keeps the best."""

from __future__ import annotations

import math

import mlflow
import pytest
import torch
from adapter_files import adapter_weights
from diffusers import DDPMScheduler

from artlora.config import ConfigError, TrainConfig, load_config, with_inputs
from artlora.data.latent_cache import validation_data
from artlora.diffusion import families, loading
from artlora.diffusion.heldout import heldout_loss
from artlora.io import storage, tracking
from artlora.stages.train import checkpoints
from artlora.stages.train import run as train
from artlora.stages.train.early_stopping import EarlyStopping

pytestmark = pytest.mark.usefixtures("mlflow_db")


def test_early_stopping_counts_validations_without_improvement():
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    assert stopper.update(1, 1.0, {"w": torch.ones(1)}) and stopper.best_step == 1
    assert not stopper.update(2, 0.995, {"w": torch.zeros(1)})  # better, but by less than min_delta
    assert not stopper.should_stop
    assert stopper.update(3, 0.9, {"w": torch.full((1,), 3.0)}) and stopper.stale == 0
    assert not stopper.update(4, 0.95, {}) and not stopper.update(5, 0.91, {})
    assert stopper.should_stop and stopper.best_step == 3 and stopper.best_adapter["w"].item() == 3.0
    again = EarlyStopping.from_state(stopper.state_dict())
    assert again == stopper and again.should_stop
    assert not EarlyStopping(patience=0, min_delta=0).should_stop


def test_early_stopping_needs_validation(tmp_path):
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(storage_root="s3://tests", base_model="tiny", early_stopping_patience=3)
    path = tmp_path / "c.yaml"
    path.write_text("storage_root: s3://artlora\nbase_model: a/b\nmodel_name: m\ningest:\n  source: raw\n")
    with pytest.raises(ConfigError, match="eval_every"):
        load_config(path, ["train.early_stopping_patience=2"])


def test_retention_keeps_the_newest_and_the_best_validated_checkpoint(store, bucket):
    root = storage.join(bucket, "runs", "retention")
    losses = {2: 0.5, 4: 0.3, 6: 0.4, 8: None, 10: 0.45}
    for step, loss in losses.items():
        state = {"run_id": "x"}
        checkpoints.save_checkpoint(store, root, checkpoints.Checkpoint(step, {"w": torch.ones(1)}, state, loss), 2)
    assert checkpoints.complete_steps(store, root) == [4, 8, 10]
    assert checkpoints.load_checkpoint(store, root, 4).val_loss == pytest.approx(0.3)
    assert checkpoints.load_checkpoint(store, root, 8).val_loss is None
    assert checkpoints.latest_checkpoint(store, root).step == 10


def test_training_stops_early_on_an_overfitting_config_and_keeps_the_best_adapter(
    small_config, latent_cache, store, tiny_model_dir, tmp_path
):
    # A learning rate far too high for the tiny model: the validation loss gets worse within a few steps.
    config = with_inputs(
        small_config.train,
        cache_uri=latent_cache,
        learning_rate=0.3,
        warmup_steps=0,
        lr_schedule="constant",
        max_steps=40,
        eval_every=2,
        early_stopping_patience=2,
        checkpoint_every=2,
        keep_checkpoints=1,
        log_every=4,
    )
    result = train.run(config)

    assert result.stopped_early and result.steps < config.max_steps
    tracking.configure()
    client = mlflow.tracking.MlflowClient()
    history = {m.step: m.value for m in client.get_metric_history(result.run_id, "val_loss")}
    best_step = min((step for step in history if not math.isnan(history[step])), key=history.get)
    assert result.adapter_step == best_step < result.steps and result.best_val_loss == pytest.approx(history[best_step])
    assert sorted(history) == list(range(2, result.steps + 1, 2))
    assert [m.step for m in client.get_metric_history(result.run_id, "loss")] == list(range(1, result.steps + 1))

    # The written adapter is the best one: loaded with diffusers, it has the best validation loss.
    pipe = loading.load_pipeline(str(tiny_model_dir))
    pipe.load_lora_weights(str(store.download_dir(result.adapter_uri, tmp_path / "adapter")))
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    loss = heldout_loss(
        families.of(pipe), pipe.unet, scheduler, validation_data(latent_cache), config.eval_timesteps, config.seed
    )
    assert loss == pytest.approx(history[best_step], rel=1e-4)
    last = history[result.steps]  # at this rate the overfit can end in a diverged, NaN validation loss
    assert not math.isnan(loss) and (math.isnan(last) or loss < last)

    # Retention kept the best checkpoint besides the newest one.
    kept = checkpoints.complete_steps(store, train.run_uri(config))
    assert best_step in kept and len(kept) <= 2
    logged = {a.path for a in client.list_artifacts(result.run_id, "checkpoints")}
    assert "checkpoints/step-00000002" in logged


def test_a_resumed_run_restores_the_validation_state_and_ends_like_an_uninterrupted_one(
    small_config, latent_cache, store
):
    config = with_inputs(
        small_config.train,
        cache_uri=latent_cache,
        learning_rate=0.05,
        lr_schedule="constant",
        max_steps=8,
        eval_every=2,
        early_stopping_patience=10,
        checkpoint_every=2,
        log_every=8,
    )
    first = train.run(config)
    first_weights = adapter_weights(store, first.adapter_uri)
    root = train.run_uri(config)
    # As if the run had died just after its step-4 checkpoint: what came later is gone.
    for step in checkpoints.complete_steps(store, root):
        if step > 4:
            store.delete_prefix(checkpoints.checkpoint_uri(root, step))
    store.delete_prefix(first.adapter_uri)

    second = train.run(config)
    assert second.resumed_from == 4 and second.run_id == first.run_id
    assert (second.adapter_step, second.best_val_loss) == (first.adapter_step, first.best_val_loss)
    second_weights = adapter_weights(store, second.adapter_uri)
    assert second_weights.keys() == first_weights.keys()
    assert all(torch.equal(second_weights[key], value) for key, value in first_weights.items())
