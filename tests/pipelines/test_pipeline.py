"""The committed pipeline is a fresh compile, runs end to end through kfp.local into the MLflow registry, and
trains again only when the dataset changed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from service_environment import kill_local_services, without_services
from small_configs import small_config_for

from artlora.cli import main
from artlora.config import load_config
from artlora.demo import sample_data
from artlora.diffusion import loading
from artlora.io import local_services, model_registry, settings, tracking
from artlora.pipelines import build
from artlora.tasks import changes
from artlora.tasks.parameters import arguments

REPO = Path(__file__).resolve().parents[2]


def test_committed_pipeline_yaml_equals_a_fresh_compile(tmp_path):
    fresh = build.compile_pipeline(load_config(REPO / build.COMPILED_FROM), tmp_path / "style_lora.yaml")
    assert fresh.read_text() == build.COMPILED.read_text(), "run `make compile` and commit pipelines/style_lora.yaml"


def _image(pipe) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    out = pipe("a woodcut of a tree", num_inference_steps=2, height=32, width=32, generator=generator, output_type="np")
    return out.images[0]


def _evaluate_task_outputs_read_back(work_dir: Path, result: dict) -> None:
    """The evaluate task's KFP outputs, as the KFP UI shows them, from the local run's artifacts: the HTML report
    (the same page as the stored one) and the Metrics (the evaluation's numbers)."""
    reports = [path for path in (work_dir / "kfp").rglob("report") if path.is_file() and "evaluate" in str(path)]
    assert len(reports) == 1, reports
    page = reports[0].read_text()
    assert page == Path(result["report"]).read_text() and "Painted while it trained" in page
    # A Metrics output is its artifact's metadata, which the task's executor output holds.
    executed = json.loads((reports[0].parent / "executor_output.json").read_text())
    metrics = executed["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert metrics["val_loss_lora"] == pytest.approx(result["evaluation"]["val_loss_lora"])


def _train_runs(experiment: str) -> int:
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.`artlora.stage` = 'train'")
    return len(runs)


@pytest.fixture
def local_services_up(monkeypatch):
    """No store or tracking server in the environment: artlora's local services come up (free ports, this test's
    work folder) and are exported, as `demo` and `pipeline run --local` do; killed afterwards."""
    environment = without_services(os.environ)
    for key in set(os.environ) - set(environment):
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    local_services.ensure()
    yield os.environ["MLFLOW_TRACKING_URI"]
    kill_local_services(os.environ[settings.WORK_DIR])  # its data goes with the test's folder: nothing to flush


def _everything_logged(config, logs: list[str]) -> str:
    """The run's output (every task's log) and every MLflow param and tag of the experiment and the model."""
    client = MlflowClient()
    runs = mlflow.search_runs(experiment_names=[config.experiment], output_format="list")
    logged = logs + [json.dumps([run.data.params, run.data.tags]) for run in runs]
    logged += [json.dumps(version.tags) for version in client.search_model_versions(f"name = '{config.model_name}'")]
    return "\n".join(logged)


@pytest.mark.slow
def test_pipeline_registers_a_loadable_champion_and_retrains_only_when_the_data_changed(
    bucket, sample_folder, tiny_model_dir, tmp_path, local_services_up, capfd, work_dir
):
    # The local services' generated keys, as a cluster's Secret would give them to the tasks: they must show up
    # in no log line, no MLflow param or tag and no pipeline argument.
    secrets = [os.environ[name] for name in ("ARTLORA_S3_ACCESS_KEY", "ARTLORA_S3_SECRET_KEY")]
    source = shutil.copytree(sample_folder, tmp_path / "source")
    config = small_config_for(bucket, tiny_model_dir, source, "train.learning_rate=0.01")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    logs: list[str] = []

    def run_command() -> tuple[dict, str]:
        """`artlora pipeline run --local`: its JSON result, and the summary it ends with (both on stdout)."""
        assert main(["pipeline", "run", "--local", "--config", str(config_file)]) == 0
        printed = capfd.readouterr()
        logs.extend([printed.out, printed.err])
        assert "no effect in the current local runner" not in printed.err, "kfp.local's local-only warnings shown"
        result, end = json.JSONDecoder().raw_decode(printed.out, printed.out.rfind("\n{\n") + 1)
        return result, printed.out[end:]

    first, said = run_command()
    assert first["changed"] is True and first["alias"] == "champion" and first["version"] == "1"
    assert first["reason"] == "passed all 1 gate rule(s)"
    training = first["training"]
    assert (training["steps"], training["adapter_step"], training["stopped_early"]) == (4, 4, False)
    # The end of the run names what a user looks for next.
    for line in (
        f"adapter          : {first['adapter_uri']} (trained now)",
        f"MLflow run       : {first['run_id']} at {local_services_up}",
        f"MLflow UI        : {first['mlflow_ui']}",
        "training         : ran all 4 steps; kept the adapter of step 4",
        f"evaluation       : held-out loss {first['evaluation']['val_loss_base']:.4f} (base) -> ",
        f"styles painted closest to their own: base {first['evaluation']['style_hits_base']:.0f}, LoRA ",
        f"caption gap      : {first['evaluation']['caption_gap_base']:.4f} (base) -> ",
        f"registered model : {config.model_name} version 1 (alias: champion)",
        "why that alias   : passed all 1 gate rule(s)",
        f"evaluation report: {first['report']}",
        f"style sheet      : {first['style_sheet']}",
        f"artlora generate --model models:/{config.model_name}/1",
    ):
        assert line in said
    with Image.open(first["style_sheet"]) as sheet:  # copied beside the report
        assert sheet.format == "PNG" and Path(first["style_sheet"]).parent == Path(first["report"]).parent
    tracking.configure()
    version = model_registry.version_by_alias(config.model_name, "champion")
    assert version.tags["dataset_fingerprint"] == first["dataset_fingerprint"]
    assert version.tags["source_fingerprint"] and version.tags["pipeline_config_digest"]
    # retrain-if-changed, outside the pipeline, comes to the same verdict from the same config.
    assert changes.check(config).covering.version == "1"

    adapter_dir = model_registry.download_version(version, tmp_path / "download")
    pipe = loading.load_pipeline(str(tiny_model_dir))
    pipe.set_progress_bar_config(disable=True)
    before = _image(pipe)
    pipe.load_lora_weights(str(adapter_dir))
    assert np.abs(_image(pipe) - before).max() > 1e-3, "the registered adapter does not change the model's output"

    # The local MLflow server's REST API, which its UI reads, lists the run with its images and report to the
    # user that `services up` made (and to nobody without the login).
    api = f"{local_services_up}/api/2.0/mlflow"
    assert requests.get(f"{api}/experiments/search?max_results=10", timeout=30).status_code == 401
    web = requests.Session()
    web.auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    experiments = web.get(f"{api}/experiments/search?max_results=10", timeout=30).json()["experiments"]
    runs = web.post(
        f"{api}/runs/search", json={"experiment_ids": [e["experiment_id"] for e in experiments]}, timeout=30
    ).json()["runs"]
    assert version.run_id in [run["info"]["run_id"] for run in runs]
    listed = web.get(f"{api}/artifacts/list", params={"run_id": version.run_id, "path": "eval"}, timeout=30)
    assert {"eval/grid.png", "eval/report.html"} <= {entry["path"] for entry in listed.json()["files"]}
    _evaluate_task_outputs_read_back(work_dir, first)

    again, said = run_command()
    assert again["changed"] is False and again["message"].startswith("unchanged")
    assert (again["version"], again["alias"], again["report_uri"]) == ("1", "champion", "")
    assert (again["dataset_fingerprint"], again["adapter_uri"]) == (first["dataset_fingerprint"], first["adapter_uri"])
    assert f"adapter          : {first['adapter_uri']} (trained before, reused)" in said
    assert _train_runs(config.experiment) == 1, "an unchanged run trained"
    assert len(MlflowClient().search_model_versions(f"name = '{config.model_name}'")) == 1

    image, caption = sample_data.render("woodcut", index=999, size=64, seed=7)
    image.save(source / "woodcut" / "added.png")
    (source / "woodcut" / "added.txt").write_text(caption)
    # The committed YAML runs too; every argument is passed, so its own defaults (configs/sd15.yaml's) do not matter.
    third = build.run_local(build.COMPILED, arguments(config), pipeline_root=tmp_path / "kfp")
    assert third["changed"] is True and third["version"] == "2"
    assert third["dataset_fingerprint"] != first["dataset_fingerprint"]
    assert _train_runs(config.experiment) == 2

    printed = capfd.readouterr()
    seen = _everything_logged(config, [*logs, printed.out, printed.err]) + json.dumps(arguments(config))
    assert "check-changes" in seen and not any(value in seen for value in secrets)
