"""Registering test adapters: other adapters made from a trained one, runs holding chosen metrics, unique names."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import mlflow
from safetensors.torch import load_file, save_file

from artlora import contracts
from artlora.config import RegisterConfig, with_inputs
from artlora.diffusion.adapters import DIFFUSERS_FILE, read_metadata
from artlora.io import runs, storage, tracking
from artlora.stages.register import run as register


def unique_model_name() -> str:
    """The session's MLflow registry is shared by the tests: each registers under a name of its own."""
    return f"test-style-{uuid.uuid4().hex[:8]}"


def scaled_adapter(store: storage.Storage, adapter_uri: str, factor: float, tmp: Path) -> str:
    """Another adapter: a copy of `adapter_uri` whose LoRA up-projections are scaled by `factor` (so its weights,
    and its content digest, differ), with the same provenance metadata; returns its s3:// folder."""
    folder = tmp / f"scaled-{factor}"
    store.download_dir(adapter_uri, folder)
    path = folder / DIFFUSERS_FILE
    tensors = {name: value * factor if "lora_B" in name else value for name, value in load_file(path).items()}
    save_file(tensors, path, metadata=read_metadata(path, prefix=""))
    target = storage.join(adapter_uri.rsplit("/", 2)[0], f"scaled-{uuid.uuid4().hex[:8]}", "adapter")
    store.upload_dir(folder, target)
    return target


def run_copy(store: storage.Storage, adapter_uri: str, run_id: str) -> tuple[str, str]:
    """A copy of a trained run: its folder (adapter, evaluation) under a prefix of its own, and a run holding its
    metrics, dataset fingerprint and evaluation settings; (adapter URI, run id). For a test that evaluates the
    session's style run again or reads back what a registration writes beside the adapter and into the run (the
    gate page): the style run is shared by the xdist workers, whose tests register it at the same time."""
    folder = contracts.run_of_adapter(adapter_uri)
    copy = storage.join(folder.rsplit("/", 1)[0], f"copy-{uuid.uuid4().hex[:8]}")
    with tempfile.TemporaryDirectory() as tmp:  # not the test's tmp_path, where it may download a version
        store.upload_dir(store.download_dir(folder, tmp), copy)
    fingerprint = runs.run_tags(run_id)[contracts.DATASET_FINGERPRINT_TAG]
    settings = mlflow.artifacts.load_dict(f"runs:/{run_id}/config/evaluate.json")
    return contracts.adapter_folder(copy), run_with(runs.run_metrics(run_id), fingerprint, settings)


def run_with(metrics: dict[str, float], fingerprint: str, evaluate_config: dict | None = None) -> str:
    """A finished MLflow run holding `metrics`, tagged with a dataset fingerprint as train tags its runs (and,
    given one, the evaluate stage's resolved config as evaluate logs it); its id."""
    tracking.configure()
    with mlflow.start_run() as run:
        mlflow.log_metrics(metrics)
        mlflow.set_tag("artlora.dataset_fingerprint", fingerprint)
        if evaluate_config is not None:
            mlflow.log_dict(evaluate_config, "config/evaluate.json")
    return run.info.run_id


def register_as(config: RegisterConfig, name: str, adapter_uri: str, run_id: str, **changes) -> register.RegisterResult:
    inputs = {"model_name": name, "adapter_uri": adapter_uri, "run_id": run_id, **changes}
    return register.run(with_inputs(config, **inputs))
