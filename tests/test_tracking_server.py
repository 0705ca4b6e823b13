"""The production tracking path: a real `mlflow server`, artifacts proxied to S3, reached via MLFLOW_TRACKING_URI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

from artlora import tracking
from artlora.config import with_inputs
from artlora.stages import evaluate, register, train


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path, store, monkeypatch):
    if not store.client.bucket_exists("mlflow-server"):  # as an operator would create it before the server
        store.client.make_bucket("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        os.path.join(os.path.dirname(sys.executable), "mlflow"),
        "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", "s3://mlflow-server/artifacts",
        "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}",
    ]  # fmt: skip
    # The server writes artifacts to the same S3 endpoint through boto3.
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": os.environ["ARTLORA_S3_ENDPOINT"]}
    log = tmp_path / "server.log"  # a file, not a pipe: an undrained pipe would block the chatty server
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not start within 90 s"
                time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_stages_track_and_register_through_a_tracking_server(mlflow_server, small_config, latent_cache, store):
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
    adapter_dir = mlflow.artifacts.download_artifacts(artifact_uri=version.source)
    assert "pytorch_lora_weights.safetensors" in os.listdir(adapter_dir)
