"""The production tracking path: a real `mlflow server`, artifacts proxied to S3, reached via MLFLOW_TRACKING_URI."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from artlora.config import with_inputs
from artlora.io import tracking
from artlora.stages import evaluate, register, train


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL cluster on loopback (the server binaries are on every dev and CI machine)."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert binaries, "PostgreSQL server binaries not found: apt-get install postgresql (see .ci/run)"
    bin_dir = os.path.dirname(binaries[-1])
    # initdb refuses to run as root, so the cluster belongs to the postgres user when tests run as root; it
    # lives outside pytest's temporary folders, which only their owner may enter.
    root = Path(tempfile.mkdtemp(prefix="artlora-pg-"))
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_owner:
        shutil.chown(root, "postgres")
    port = _free_port()
    data = root / "data"
    run = lambda *args: subprocess.run([*as_owner, *args], check=True, capture_output=True)  # noqa: E731
    run(f"{bin_dir}/initdb", "-D", str(data), "-A", "trust", "-U", "artlora")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    run(f"{bin_dir}/pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        run(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "artlora", "mlflow")
        yield f"postgresql://artlora@127.0.0.1:{port}/mlflow"
    finally:
        run(f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_store(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def mlflow_server(tmp_path, store, backend_store, monkeypatch):
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
        "--backend-store-uri", backend_store,
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
