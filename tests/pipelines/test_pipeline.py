"""The compiled pipeline is current, and runs end to end through kfp.local into the MLflow registry."""

from __future__ import annotations

import os
import tempfile

import mlflow
import numpy as np
import pytest
import requests
import torch
from service_environment import without_services

from artlora.diffusion import loading
from artlora.io import local_services, tracking
from artlora.pipelines import build


def test_committed_pipeline_yaml_equals_a_fresh_compile(tmp_path):
    fresh = build.compile_pipeline(tmp_path / "style_lora.yaml")
    assert fresh.read_text() == build.COMPILED.read_text(), "run `make compile` and commit pipelines/style_lora.yaml"


def _image(pipe) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    out = pipe("a woodcut of a tree", num_inference_steps=2, height=32, width=32, generator=generator, output_type="np")
    return out.images[0]


@pytest.fixture
def local_services_up(monkeypatch):
    """No store or tracking server in the environment: artlora's local services come up (free ports, this test's
    work folder) and are exported, as `demo` and `pipeline run --local` do; stopped afterwards."""
    environment = without_services(os.environ)
    for key in set(os.environ) - set(environment):
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    local_services.ensure()
    yield os.environ["MLFLOW_TRACKING_URI"]
    local_services.down()


@pytest.mark.slow
def test_pipeline_runs_locally_and_registers_a_loadable_champion(small_config, tiny_model_dir, local_services_up):
    config = small_config.model_copy(update={"train": small_config.train.model_copy(update={"learning_rate": 0.01})})
    outputs = build.run_local(config.model_dump_json(), pipeline_root=tempfile.mkdtemp())

    assert outputs["alias"] == "champion" and outputs["model_name"] == config.model_name
    tracking.configure()
    version = tracking.version_by_alias(config.model_name, "champion")
    assert str(version.version) == outputs["version"]
    assert version.tags["dataset_fingerprint"] == outputs["dataset_fingerprint"]

    adapter_dir = mlflow.artifacts.download_artifacts(artifact_uri=version.source)
    pipe = loading.load_pipeline(str(tiny_model_dir))
    pipe.set_progress_bar_config(disable=True)
    before = _image(pipe)
    pipe.load_lora_weights(adapter_dir)
    after = _image(pipe)
    assert np.abs(after - before).max() > 1e-3, "the registered adapter does not change the model's output"

    # The local MLflow server's REST API, which its UI reads, lists the run with its images and report.
    api = f"{local_services_up}/api/2.0/mlflow"
    experiments = requests.get(f"{api}/experiments/search?max_results=10", timeout=30).json()["experiments"]
    runs = requests.post(
        f"{api}/runs/search", json={"experiment_ids": [e["experiment_id"] for e in experiments]}, timeout=30
    ).json()["runs"]
    assert version.run_id in [run["info"]["run_id"] for run in runs]
    listed = requests.get(f"{api}/artifacts/list", params={"run_id": version.run_id, "path": "eval"}, timeout=30)
    assert {"eval/grid.png", "eval/report.html"} <= {entry["path"] for entry in listed.json()["files"]}
