"""Evaluate compares base and LoRA; register versions the adapter in MLflow and gates the champion alias."""

from __future__ import annotations

import mlflow
import pytest

from artlora.config import with_inputs
from artlora.io import storage, tracking
from artlora.stages import evaluate, register, train
from artlora.stages.register.gate import choose_alias


@pytest.fixture
def trained(small_config, latent_cache):
    config = with_inputs(small_config.train, cache_uri=latent_cache, learning_rate=0.01)
    return train.run(config)


def test_evaluate_logs_losses_grid_and_report(small_config, latent_cache, trained, store):
    config = with_inputs(
        small_config.evaluate, adapter_uri=trained.adapter_uri, cache_uri=latent_cache, run_id=trained.run_id
    )
    result = evaluate.run(config)

    assert result.val_loss_base > 0 and result.val_loss_lora > 0
    assert result.val_loss_base != result.val_loss_lora  # the adapter changed the UNet
    report = store.get_bytes(result.report_uri).decode()
    assert "data:image/png;base64," in report and f"{result.val_loss_lora:.6f}" in report
    assert store.exists(storage.join(result.report_uri.rsplit("/", 1)[0], "grid.png"))
    metrics = tracking.run_metrics(trained.run_id)
    assert metrics["val_loss_lora"] == pytest.approx(result.val_loss_lora)
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(trained.run_id, "eval")}
    assert artifacts == {"eval/grid.png", "eval/report.html"}

    again = evaluate.run(config)  # fixed timesteps and fixed noise: the same numbers every time
    assert again.val_loss_lora == result.val_loss_lora and again.val_loss_base == result.val_loss_base


def _log_eval(run_id: str, val_loss: float) -> None:
    tracking.configure()
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({"val_loss_lora": val_loss, "val_loss_base": 1.0})


def test_register_gates_the_champion_alias(small_config, trained):
    config = with_inputs(small_config.register, adapter_uri=trained.adapter_uri, run_id=trained.run_id)
    with pytest.raises(ValueError, match="val_loss_lora"):
        register.run(config)  # not evaluated yet

    _log_eval(trained.run_id, 0.5)
    first = register.run(config)
    assert (first.version, first.alias) == ("1", "champion")
    version = tracking.version_by_alias(config.model_name, "champion")
    assert version.tags["dataset_fingerprint"] and version.tags["base_model"] == config.base_model
    assert float(version.tags["val_loss_lora"]) == 0.5

    _log_eval(trained.run_id, 0.7)  # worse than the champion: a challenger, the champion stays
    second = register.run(config)
    assert (second.version, second.alias, second.champion_metric) == ("2", "challenger", 0.5)
    assert str(tracking.version_by_alias(config.model_name, "champion").version) == "1"

    _log_eval(trained.run_id, 0.3)  # better: it takes over
    third = register.run(config)
    assert third.alias == "champion"
    assert str(tracking.version_by_alias(config.model_name, "champion").version) == "3"


def test_choose_alias():
    assert choose_alias(1.0, None) == "champion"
    assert choose_alias(0.9, 1.0) == "champion"
    assert choose_alias(1.0, 1.0) == "challenger"


def test_evaluating_again_with_other_settings_keeps_the_run_usable(small_config, latent_cache, trained):
    config = with_inputs(
        small_config.evaluate, adapter_uri=trained.adapter_uri, cache_uri=latent_cache, run_id=trained.run_id
    )
    evaluate.run(config)
    evaluate.run(with_inputs(config, prompts=("another prompt",)))  # params are immutable in MLflow
    run = mlflow.tracking.MlflowClient().get_run(trained.run_id)
    assert run.data.params["evaluate.prompts"] == '["a woodcut of a tree"]'
