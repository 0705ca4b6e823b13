"""The base model a version names is checked before it is used: registration records the sha256 of every weight
and config file of the base (tag artlora.base_manifest), and `generate` and the pyfunc loader refuse, in one line
naming the version and the file, a base with a file changed, added or removed since; so does the gate, before it
measures a champion again on new data.

The base here is a copy of the tiny model, given back intact to each test, changed as someone with write access
to where the base model lives (a local folder, the store's models/ prefix) could change it. Before this work a
version painted with whatever weights its base_model named (issue 21)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from registered import register_as, run_with, scaled_adapter, unique_model_name
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from artlora import contracts
from artlora.cli import main
from artlora.diffusion import base_files
from artlora.io import manifest, model_registry

UNET = "unet/diffusion_pytorch_model.safetensors"

pytestmark = pytest.mark.usefixtures("tracking_server")


def register_on(style_run, base: Path) -> model_registry.Version:
    """The style adapter registered as a new model on `base`."""
    name = unique_model_name()
    register_as(style_run.config.register, name, style_run.adapter_uri, style_run.run_id, base_model=str(base))
    found = model_registry.model_version(name, "1")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def registered(style_run, mlflow_server, tiny_model_dir, tmp_path_factory) -> tuple[model_registry.Version, Path]:
    """The style adapter registered once, on a copy of the tiny base model that the tests change (each gets it
    back intact: `base`)."""
    base = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("base") / "base"))
    with mock.patch.dict(os.environ, mlflow_server.environment()):
        return register_on(style_run, base), base


@pytest.fixture
def base(registered, tiny_model_dir) -> Iterator[Path]:
    """The registered version's base model, this test's to change."""
    path = registered[1]
    yield path
    shutil.rmtree(path)
    shutil.copytree(tiny_model_dir, path)


@pytest.fixture
def version(registered, base) -> model_registry.Version:
    return registered[0]


def change_weights(base: Path) -> str:
    """The UNet's weights, still a valid file of the same tensors, with one of them nudged."""
    path = base / UNET
    tensors = load_file(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    first = sorted(tensors)[0]
    save_file({**tensors, first: tensors[first] + 0.01}, path, metadata=metadata)
    return f"{UNET} has changed"


def add_weights(base: Path) -> str:
    shutil.copy(base / UNET, base / "unet" / "aaa.safetensors")
    return "unet/aaa.safetensors is not one of its files"


def remove_config(base: Path) -> str:
    (base / "vae" / "config.json").unlink()
    return "vae/config.json is missing"


SPOILS = [change_weights, add_weights, remove_config]


def generated(capsys, version: model_registry.Version, out: Path) -> tuple[int, str]:
    model = f"{version.name}/{version.version}"
    code = main(["generate", "--model", model, "--prompt", "a cat", "--steps", "2", "--out", str(out)])
    captured = capsys.readouterr()
    return code, (captured.err.strip().splitlines() or [""])[-1]


def test_registration_records_every_weight_and_config_file_of_the_base(version, base):
    recorded = json.loads(version.tags[contracts.BASE_MANIFEST_TAG])

    assert version.tags["base_model"] == str(base)
    assert {"model_index.json", "unet/config.json", UNET, "text_encoder/model.safetensors"} <= set(recorded)
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    assert sorted(recorded) == files  # the tiny model's folder holds weights and configs only
    for path, sha256 in recorded.items():
        assert hashlib.sha256((base / path).read_bytes()).hexdigest() == sha256, path


@pytest.mark.parametrize("spoil", SPOILS, ids=lambda spoil: spoil.__name__)
def test_generate_refuses_a_changed_base_naming_the_version_and_the_file(version, base, spoil, capsys, tmp_path):
    problem = spoil(base)

    code, line = generated(capsys, version, tmp_path / "out")

    assert code == 2
    assert line.startswith(f"artlora generate: error: models:/{version.name}/1: base model {base}: {problem}"), line
    assert line.endswith("register the adapter again on the base as it is now)")
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("spoil", SPOILS, ids=lambda spoil: spoil.__name__)
def test_the_pyfunc_loader_refuses_a_changed_base_naming_the_file(version, base, spoil):
    problem = spoil(base)

    with pytest.raises(base_files.BaseModelFilesError, match=f"models:/{version.name}/1: base model .*: {problem}"):
        mlflow.pyfunc.load_model(f"models:/{version.name}/1")


def test_the_gate_refuses_to_measure_again_a_champion_whose_base_changed(version, base, style_run, store, tmp_path):
    assert "champion" in version.aliases
    change_weights(base)
    settings = mlflow.artifacts.load_dict(f"runs:/{style_run.run_id}/config/evaluate.json")
    run = run_with({"val_loss_lora": 0.1}, "other-data", settings)  # other data: the champion is measured again
    challenger = scaled_adapter(store, style_run.adapter_uri, 0.5, tmp_path)

    refused = f"models:/{version.name}/1: base model {base}: {UNET} has changed"
    with pytest.raises(base_files.BaseModelFilesError, match=refused):
        register_as(style_run.config.register, version.name, challenger, run, cache_uri=style_run.cache_uri)


def test_an_intact_base_paints_through_generate_and_pyfunc(version, capsys, tmp_path):
    code, line = generated(capsys, version, tmp_path / "out")
    assert code == 0, line
    assert len(list((tmp_path / "out").glob("*.png"))) == 1

    images = mlflow.pyfunc.load_model(f"models:/{version.name}/1").predict(["a cat"], params={"steps": 2})
    assert len(images) == 1 and images[0].startswith(b"\x89PNG")


def test_a_version_registered_before_base_digests_still_paints_and_says_so(style_run, base, capsys, caplog, tmp_path):
    version = register_on(style_run, base)  # a version of its own: the module's keeps its tag
    MlflowClient().delete_model_version_tag(version.name, version.version, contracts.BASE_MANIFEST_TAG)

    with caplog.at_level(logging.WARNING, logger="artlora.diffusion.base_files"):
        code, line = generated(capsys, version, tmp_path / "out")

    assert code == 0, line
    assert f"models:/{version.name}/1 records no digest of its base model {base}" in caplog.text


def test_each_file_is_hashed_once_until_it_is_written_again(base):
    with mock.patch.object(manifest, "file_sha256", wraps=manifest.file_sha256) as hashed:
        first = base_files.base_manifest(str(base))
        assert base_files.base_manifest(str(base)) == first
        assert hashed.call_count == len(first)  # the second look hashed nothing

        unet = base / UNET
        before = unet.stat()
        change_weights(base)
        os.utime(unet, ns=(before.st_atime_ns, before.st_mtime_ns))  # its time set back: its ctime still moved
        assert unet.stat().st_size == before.st_size
        assert base_files.base_manifest(str(base))[UNET] != first[UNET]
        assert hashed.call_count == len(first) + 1


def test_an_s3_base_is_hashed_as_downloaded_without_the_download_marker(base, store, bucket):
    uri = f"{bucket}/models/tiny-sd"
    store.upload_dir(base, uri)

    assert base_files.base_manifest(uri) == base_files.base_manifest(str(base))


def test_a_single_file_base_is_its_one_file(base):
    checkpoint = base / "unet" / "diffusion_pytorch_model.safetensors"

    assert base_files.base_manifest(str(checkpoint)) == {checkpoint.name: manifest.file_sha256(checkpoint)}
