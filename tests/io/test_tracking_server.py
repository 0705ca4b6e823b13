"""The production tracking path: a real `mlflow server`, artifacts proxied to S3, reached via MLFLOW_TRACKING_URI."""

from __future__ import annotations

import os

import pytest
from conftest import new_database, running_mlflow_server

from artlora.config import with_inputs
from artlora.io import tracking
from artlora.stages import evaluate, register, train


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_store(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    return new_database(request.getfixturevalue("postgres_url"), "tracking")


@pytest.fixture
def mlflow_server(tmp_path, store, backend_store, monkeypatch):
    """A server of its own per backend (the session's shared one runs on PostgreSQL only)."""
    with running_mlflow_server(backend_store, tmp_path / "server.log") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url


def test_stages_track_and_register_through_a_tracking_server(
    mlflow_server, small_config, latent_cache, store, tmp_path
):
    trained = train.run(with_inputs(small_config.train, cache_uri=latent_cache, learning_rate=0.01))
    evaluate.run(
        with_inputs(
            small_config.evaluate, adapter_uri=trained.adapter_uri, cache_uri=latent_cache, run_id=trained.run_id
        )
    )
    result = register.run(with_inputs(small_config.register, adapter_uri=trained.adapter_uri, run_id=trained.run_id))

    assert tracking.configure() == mlflow_server
    version = tracking.version_by_alias(small_config.model_name, "champion")
    assert str(version.version) == result.version
    # The adapter went through the server's artifact proxy into the object store, and comes back from there.
    assert any(uri.endswith("pytorch_lora_weights.safetensors") for uri in store.list("s3://mlflow-server/artifacts"))
    adapter_dir = tracking.download_version(version, tmp_path)
    assert "pytorch_lora_weights.safetensors" in os.listdir(adapter_dir)
