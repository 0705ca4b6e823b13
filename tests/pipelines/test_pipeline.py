"""The compiled pipeline is current, and runs end to end through kfp.local into the MLflow registry."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import requests
import torch
import yaml
from service_environment import without_services

from artlora.cli import main
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
def test_pipeline_runs_locally_and_registers_a_loadable_champion(
    capsys, small_config, tiny_model_dir, local_services_up, tmp_path
):
    config = small_config.model_copy(update={"train": small_config.train.model_copy(update={"learning_rate": 0.01})})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert main(["pipeline", "run", "--local", "--config", str(config_file)]) == 0
    printed = capsys.readouterr()
    outputs = json.loads(printed.out[printed.out.rfind("\n{\n") + 1 :])  # the result, after any task output

    assert outputs["alias"] == "champion" and outputs["model_name"] == config.model_name
    assert outputs["reason"] == "passed all 1 gate rule(s)"
    assert (outputs["steps"], outputs["adapter_step"], outputs["stopped_early"]) == (4, 4, False)
    # The end of the run names what a user looks for next.
    for line in (
        f"adapter          : {outputs['adapter_uri']}",
        f"MLflow run       : {outputs['run_id']} at {local_services_up}",
        f"MLflow UI        : {outputs['mlflow_ui']}",
        "training         : ran all 4 steps; kept the adapter of step 4",
        f"registered model : {config.model_name} version {outputs['version']} (alias: champion)",
        "why that alias   : passed all 1 gate rule(s)",
        f"evaluation report: {outputs['report']}",
        f"artlora generate --model models:/{config.model_name}/{outputs['version']}",
    ):
        assert line in printed.err
    tracking.configure()
    version = tracking.version_by_alias(config.model_name, "champion")
    assert str(version.version) == outputs["version"]
    assert version.tags["dataset_fingerprint"] == outputs["dataset_fingerprint"]

    adapter_dir = tracking.download_version(version, tmp_path / "download")
    pipe = loading.load_pipeline(str(tiny_model_dir))
    pipe.set_progress_bar_config(disable=True)
    before = _image(pipe)
    pipe.load_lora_weights(str(adapter_dir))
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
