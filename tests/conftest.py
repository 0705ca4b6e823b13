"""Shared fixtures: a real S3 endpoint on loopback, a private work folder, the tiny model."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

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
