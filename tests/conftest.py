"""Shared fixtures: a real S3 endpoint on loopback, PostgreSQL and an `mlflow server` on it, a private work folder,
the tiny model, and one trained and evaluated style adapter for the tests that look it up or paint with it."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from artlora.io import services, storage


@pytest.fixture(scope="session")
def s3_endpoint():
    """One embedded S3 endpoint (moto's server on 127.0.0.1) for the whole test session."""
    for key in ("ARTLORA_S3_ENDPOINT", "MLFLOW_TRACKING_URI"):
        os.environ.pop(key, None)
    with services.embedded_s3() as url:
        yield url


@pytest.fixture
def store(s3_endpoint) -> storage.Storage:
    return storage.get_storage()


@pytest.fixture
def bucket(store, request) -> str:
    """A fresh s3:// prefix per test, so tests never see each other's objects."""
    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40].strip("-")
    # Bucket names are short: the hash keeps parametrized tests with a long common name apart.
    return f"s3://test-{name}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]}"


@pytest.fixture(autouse=True)
def work_dir(tmp_path, monkeypatch) -> Path:
    """Each test gets its own work folder (local caches, SQLite MLflow store)."""
    path = tmp_path / "work"
    monkeypatch.setenv("ARTLORA_WORK_DIR", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny Stable Diffusion saved once, in the diffusers layout, for every test that loads a base model."""
    from artlora.diffusion import tiny

    return tiny.save_tiny(tmp_path_factory.mktemp("tiny-sd") / "model", seed=0)


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory) -> Path:
    """A few generated artworks in every sample style, with captions (64 px: the tiny model's size)."""
    from artlora.data import sample_data

    folder = tmp_path_factory.mktemp("raw") / "styles"
    sample_data.generate(folder, count=20, size=64, seed=0)
    return folder


@pytest.fixture
def small_config(bucket, tiny_model_dir, sample_folder):
    """The demo config shrunk to test size, pointed at this test's bucket, the tiny model and the samples."""
    from small_configs import small_config_for

    return small_config_for(bucket, tiny_model_dir, sample_folder)


@pytest.fixture
def latent_cache(small_config) -> str:
    """Ingest and augment the samples; the latent cache index URI."""
    from artlora.config import with_inputs
    from artlora.stages import augment, ingest

    dataset = ingest.run(small_config.ingest)
    return augment.run(with_inputs(small_config.augment, dataset_uri=dataset.dataset_uri)).cache_uri


@pytest.fixture(scope="session")
def _mlflow_db_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store with its schema migrations already run (they take seconds per database)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-template")
    path = folder / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{path}", default_artifact_root=str(folder / "artifacts"))
    store.engine.dispose()
    return path


@pytest.fixture
def mlflow_db(work_dir, _mlflow_db_template) -> Path:
    """Opt-in speed-up: this test's private MLflow store starts as a copy of the migrated template.

    Same isolation as `work_dir` alone (the copy is this test's own file), without the schema migration.
    Use it with `pytestmark = pytest.mark.usefixtures("mlflow_db")`.
    """
    import shutil

    work_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(_mlflow_db_template, work_dir / "mlflow.db"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL cluster on loopback (the server binaries are on every dev and CI machine); the URL
    of its `postgres` database. Each user makes a database of its own with `new_database`."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert binaries, "PostgreSQL server binaries not found: apt-get install postgresql (see .ci/run)"
    bin_dir = os.path.dirname(binaries[-1])
    # initdb refuses to run as root, so the cluster belongs to the postgres user when tests run as root; it
    # lives outside pytest's temporary folders, which only their owner may enter.
    root = Path(tempfile.mkdtemp(prefix="artlora-pg-"))
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_owner:
        shutil.chown(root, "postgres")
    port = free_port()
    data = root / "data"
    run = lambda *args: subprocess.run([*as_owner, *args], check=True, capture_output=True)  # noqa: E731
    run(f"{bin_dir}/initdb", "-D", str(data), "-A", "trust", "-U", "artlora")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    run(f"{bin_dir}/pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        yield f"postgresql://artlora@127.0.0.1:{port}/postgres"
    finally:
        run(f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(root, ignore_errors=True)


def new_database(postgres_url: str, prefix: str) -> str:
    """A new, empty database in the cluster of `postgres_url`; its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def running_mlflow_server(backend_store: str, log: Path) -> Iterator[str]:
    """`mlflow server` on a free port with the given backend store, artifacts proxied to s3://mlflow-server on
    the test S3 endpoint; yields its URL."""
    store = storage.get_storage()
    if not store.client.bucket_exists("mlflow-server"):  # as an operator would create it before the server
        store.client.make_bucket("mlflow-server")
    port = free_port()
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
    # A file, not a pipe: an undrained pipe would block the chatty server.
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
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(s3_endpoint, postgres_url, tmp_path_factory) -> Iterator[str]:
    """One `mlflow server` for the session, as in production: runs and models in PostgreSQL, artifacts through the
    server into the S3 endpoint. Its registry is shared by the tests: give models unique names."""
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    with running_mlflow_server(new_database(postgres_url, "registry"), log) as url:
        yield url


@pytest.fixture
def tracking_server(mlflow_server, monkeypatch) -> str:
    """This test tracks to the session's MLflow server (MLFLOW_TRACKING_URI); its URL."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


@dataclass(frozen=True)
class StyleRun:
    """A style adapter trained and evaluated on the sample data, tracked to the session's MLflow server."""

    config: object  # the PipelineConfig it was trained with
    adapter_uri: str
    run_id: str
    cache_uri: str


@pytest.fixture(scope="session")
def style_run(mlflow_server, tiny_model_dir, sample_folder, tmp_path_factory) -> StyleRun:
    """Trained once per session (a few steps at a high LoRA scale, so that its images differ visibly from the
    base model's) and evaluated; register it under a model name of your own."""
    from small_configs import small_config_for

    from artlora.config import with_inputs
    from artlora.stages import augment, evaluate, ingest, train

    work = tmp_path_factory.mktemp("style-run")
    environment = {"MLFLOW_TRACKING_URI": mlflow_server, "ARTLORA_WORK_DIR": str(work)}
    with mock.patch.dict(os.environ, environment):
        config = small_config_for("s3://test-style-run", tiny_model_dir, sample_folder, "train.alpha=32")
        dataset = ingest.run(config.ingest)
        cache_uri = augment.run(with_inputs(config.augment, dataset_uri=dataset.dataset_uri)).cache_uri
        trained = train.run(with_inputs(config.train, cache_uri=cache_uri, learning_rate=0.01))
        inputs = {"adapter_uri": trained.adapter_uri, "cache_uri": cache_uri, "run_id": trained.run_id}
        evaluate.run(with_inputs(config.evaluate, **inputs))
    return StyleRun(config, trained.adapter_uri, trained.run_id, cache_uri)
