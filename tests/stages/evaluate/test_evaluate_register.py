"""Evaluate compares base and LoRA (register and its gate: tests/stages/register/)."""

from __future__ import annotations

import io

import mlflow
import pytest
from PIL import Image

from artlora.config import with_inputs
from artlora.io import runs, storage
from artlora.stages.evaluate import run as evaluate
from artlora.stages.evaluate.style_sheet import GAP, HEADING, SCALE
from artlora.stages.train import run as train


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
    assert "data:image/png;base64," in report and f"{result.val_loss_lora:.4f}" in report
    folder = result.report_uri.rsplit("/", 1)[0]
    assert store.exists(storage.join(folder, "grid.png"))
    sheet = Image.open(io.BytesIO(store.get_bytes(storage.join(folder, "styles.png"))))
    assert sheet.height == HEADING + 5 * (SCALE * small_config.evaluate.resolution + GAP)  # a row per style
    metrics = runs.run_metrics(trained.run_id)
    assert metrics["val_loss_lora"] == pytest.approx(result.val_loss_lora)
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(trained.run_id, "eval")}
    assert artifacts == {"eval/grid.png", "eval/styles.png", "eval/report.html"}

    styles = {"geometric", "op_art", "pointillist", "watercolour", "woodcut"}
    for side in ("base", "lora"):
        assert {f"val_loss_{side}/{style}" for style in styles} <= set(metrics)
        assert {f"style_distance_{side}/{style}" for style in styles} <= set(metrics)
        assert 0 <= metrics[f"style_hits_{side}"] <= 5 and f"caption_gap_{side}" in metrics
    assert metrics["val_loss_zero_predictor"] > 0 and metrics["memorised_images"] >= 0
    assert result.metrics == pytest.approx({k: v for k, v in metrics.items() if k in result.metrics})
    for section in (
        "Training",
        "Dataset",
        "Style confusion matrices",
        "LoRA strength sweep",
        "Content kept",
        "Memorisation",
        "CLIP score and KID were skipped",
        "Painted while it trained",  # the gallery's strip per prompt (train.sample_every paints steps 0 and 4)
        "steps 0, 4",
    ):
        assert section in report, section
    assert report.count("data:image/svg+xml;base64,") >= 5  # loss, learning rate, per-style loss and distance, sweep
    assert report == result.report_html

    again = evaluate.run(config)  # fixed timesteps and fixed noise: the same numbers every time
    assert again.val_loss_lora == result.val_loss_lora and again.val_loss_base == result.val_loss_base


def test_evaluating_again_with_other_settings_keeps_the_run_usable(small_config, latent_cache, trained):
    config = with_inputs(
        small_config.evaluate, adapter_uri=trained.adapter_uri, cache_uri=latent_cache, run_id=trained.run_id
    )
    evaluate.run(config)
    evaluate.run(with_inputs(config, prompts=("another prompt",)))  # params are immutable in MLflow
    run = mlflow.tracking.MlflowClient().get_run(trained.run_id)
    assert run.data.params["evaluate.prompts"] == '["a woodcut of a tree"]'
