"""A registered version's files are checked before they are used: registration records a manifest (every file of
the logged model with its sha256), and `models download`, `generate` (both through registry/files.py) and the
pyfunc loader refuse, in one line naming the version and the file, any file added, changed or removed since.

The files are changed here through MLflow's own artifact proxy with a valid login: what someone who obtained
write access to the artifact store (the store's keys, or an MLflow login) could do. Before this work an extra
`aaa.safetensors` planted beside the adapter was picked by `generate --format kohya` and copied out by
`models download` (issue 21)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient
from registered import register_as, unique_model_name

from artlora import contracts
from artlora.cli import main
from artlora.io import model_registry

ADAPTER = "data/adapter/pytorch_lora_weights.safetensors"

pytestmark = pytest.mark.usefixtures("tracking_server")


@pytest.fixture
def version(style_run, mlflow_server) -> model_registry.Version:
    """The style adapter registered under a name of this test's own (its files are this test's to spoil)."""
    name = unique_model_name()
    register_as(style_run.config.register, name, style_run.adapter_uri, style_run.run_id)
    found = model_registry.model_version(name, "1")
    assert found is not None
    return found


def artifact_url(server, version: model_registry.Version, path: str) -> str:
    """The artifact proxy's URL of one of the version's logged-model files."""
    model_id = version.source.removeprefix("models:/")  # registered from a logged model: models:/m-...
    location = MlflowClient().get_logged_model(model_id).artifact_location.removeprefix("mlflow-artifacts:/")
    return f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{location.strip('/')}/{path}"


def change(server, version, path: str, content: bytes | None) -> None:
    """Write (or, with None, delete) one file of the version through the proxy, logged in as the admin."""
    url, login = artifact_url(server, version, path), (server.admin.username, server.admin.password)
    response = requests.put(url, data=content, auth=login, timeout=30) if content is not None else None
    response = response or requests.delete(url, auth=login, timeout=30)
    assert response.status_code == 200, response.text


def downloaded(capsys, version, out: Path) -> tuple[int, str]:
    code = main(["models", "download", f"{version.name}/{version.version}", "--out", str(out)])
    return code, capsys.readouterr().err.strip().splitlines()[-1] if code else ""


def test_registration_records_every_file_with_its_digest(version, tmp_path):
    recorded = json.loads(version.tags[contracts.VERSION_MANIFEST_TAG])

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path)))
    assert {"MLmodel", ADAPTER} <= set(recorded)
    for path, sha256 in recorded.items():
        assert hashlib.sha256((local / path).read_bytes()).hexdigest() == sha256, path
    files = [p for p in local.rglob("*") if p.is_file() and p.name not in contracts.MLFLOW_DOWNLOAD_FILES]
    assert sorted(p.relative_to(local).as_posix() for p in files) == sorted(recorded)


def test_a_planted_extra_adapter_file_is_refused_by_download_and_generate(version, mlflow_server, capsys, tmp_path):
    weights = Path(model_registry.download_version(version, tmp_path / "clean")) / "pytorch_lora_weights.safetensors"
    change(mlflow_server, version, "data/adapter/aaa.safetensors", weights.read_bytes())  # a valid LoRA, planted

    code, line = downloaded(capsys, version, tmp_path / "out")

    assert code == 2
    assert line.startswith(
        f"artlora models download: error: models:/{version.name}/1: data/adapter/aaa.safetensors is not one of its "
        "files; its files are not those registered, so it is not used"
    )
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    model = f"{version.name}/1"
    painted = main(
        ["generate", "--model", model, "--prompt", "a cat", "--format", "kohya", "--out", str(tmp_path / "p")]
    )
    assert painted == 2 and "aaa.safetensors is not one of its files" in capsys.readouterr().err


def test_a_removed_file_is_refused(version, mlflow_server, capsys, tmp_path):
    change(mlflow_server, version, "MLmodel", None)

    code, line = downloaded(capsys, version, tmp_path / "out")

    assert code == 2 and f"models:/{version.name}/1: MLmodel is missing;" in line


def test_a_changed_adapter_is_refused_by_the_pyfunc_loader_before_it_is_read(version, mlflow_server):
    change(mlflow_server, version, ADAPTER, b"not the registered adapter")

    with pytest.raises(model_registry.VersionFilesError, match=f"models:/{version.name}/1: {ADAPTER} has changed"):
        mlflow.pyfunc.load_model(f"models:/{version.name}/1")


def test_a_changed_adapter_is_refused_as_a_warm_start_before_training(
    version, style_run, mlflow_server, store, bucket, tmp_path
):
    """Weights swapped for others that load just as well (a LoRA scaled up): train.init_from refuses the version
    before the base model is loaded or anything is written."""
    from safetensors.torch import load_file, save

    from artlora.config import with_inputs
    from artlora.diffusion.adapters import read_metadata
    from artlora.stages.train import run as train

    clean = Path(model_registry.download_version(version, tmp_path / "clean"))
    path = clean / "pytorch_lora_weights.safetensors"
    scaled = {key: value * 3 if "lora_B" in key else value for key, value in load_file(path).items()}
    change(mlflow_server, version, ADAPTER, save(scaled, metadata=read_metadata(path, prefix="")))
    config = with_inputs(style_run.config.train, storage_root=bucket, cache_uri=style_run.cache_uri)

    with pytest.raises(model_registry.VersionFilesError, match=f"models:/{version.name}/1: {ADAPTER} has changed"):
        train.run(with_inputs(config, init_from=f"models:/{version.name}/1"))
    assert not list(store.list(bucket))  # no run folder, no checkpoint
