"""Shared fixtures: a real S3 endpoint on loopback, a private work folder, the tiny model."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from artlora import services, storage


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
    return f"s3://test-{name}"


@pytest.fixture(autouse=True)
def work_dir(tmp_path, monkeypatch) -> Path:
    """Each test gets its own work folder (local caches, SQLite MLflow store)."""
    path = tmp_path / "work"
    monkeypatch.setenv("ARTLORA_WORK_DIR", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path
