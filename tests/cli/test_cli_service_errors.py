"""An object store or tracking server that is gone, or answers nothing, is reported by the CLI as one line naming
the endpoint, with exit code 2, in bounded time; the tracking server is checked before a stage does any work."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import yaml
from test_cli_errors import fails_clearly

from artlora.io import settings

pytestmark = pytest.mark.usefixtures("mlflow_db")  # a migrated local store: the time measured is the failure's


@pytest.fixture
def config_file(small_config, tmp_path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(small_config.model_dump(mode="json")))
    return str(path)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def frozen_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers, as a server stopped with SIGSTOP does (the
    kernel completes the handshake; nothing reads the request)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def timed(capsys, argv: list[str], command: str, *named: str) -> tuple[str, float]:
    started = time.monotonic()
    line = fails_clearly(capsys, argv, command, *named)
    return line, time.monotonic() - started


def test_an_s3_endpoint_that_refuses_connections_is_named(capsys, monkeypatch, config_file, closed_port):
    endpoint = f"127.0.0.1:{closed_port}"
    monkeypatch.setenv(settings.S3_ENDPOINT, f"http://{endpoint}")
    line, seconds = timed(capsys, ["ingest", "--config", config_file], "ingest", endpoint, "did not answer")
    assert "ConnectionRefused" in line or "NewConnectionError" in line, line
    assert seconds < 10, f"{seconds:.1f} s to report a refused connection"  # 4 tries, 3 s of back-off


def test_a_frozen_s3_endpoint_is_reported_after_the_read_timeout(capsys, monkeypatch, config_file, frozen_port):
    endpoint = f"127.0.0.1:{frozen_port}"
    monkeypatch.setenv(settings.S3_ENDPOINT, f"http://{endpoint}")
    monkeypatch.setenv(settings.S3_READ_TIMEOUT, "1")
    monkeypatch.setenv(settings.S3_RETRIES, "1")
    line, seconds = timed(capsys, ["ingest", "--config", config_file], "ingest", endpoint, settings.S3_READ_TIMEOUT)
    assert "Read timed out" in line, line
    assert 2 <= seconds < 8, f"{seconds:.1f} s for 2 tries of 1 s"


def test_the_default_limits_report_a_frozen_store_within_about_a_minute():
    limits = settings.S3Limits.from_env()
    assert limits == settings.S3Limits()
    assert 30 <= limits.worst_case <= 65
    http = settings.MLFLOW_DEFAULTS
    tries, timeout = int(http["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) + 1, int(http["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    backoff = int(http["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]) * (2 ** (tries - 1) - 2)  # urllib3: 0, 2b, 4b
    assert tries * timeout + backoff + (tries - 1) * 1.0 <= 60  # MLflow adds up to 1 s of jitter per retry


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_a_bad_limit_in_the_environment_is_named(capsys, monkeypatch, config_file, value):
    monkeypatch.setenv(settings.S3_ENDPOINT, "http://127.0.0.1:9")
    monkeypatch.setenv(settings.S3_READ_TIMEOUT, value)
    fails_clearly(capsys, ["ingest", "--config", config_file], "ingest", f"{settings.S3_READ_TIMEOUT}={value!r}")


@pytest.mark.parametrize("server", ["closed_port", "frozen_port"])
def test_a_tracking_server_that_does_not_answer_is_named_before_any_work(
    capsys, monkeypatch, request, config_file, store, small_config, server
):
    uri = f"http://127.0.0.1:{request.getfixturevalue(server)}"
    monkeypatch.setenv(settings.TRACKING_URI, uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")  # the frozen server: 4 tries of 1 s
    line, seconds = timed(capsys, ["ingest", "--config", config_file], "ingest", uri, "MLFLOW_TRACKING_URI")
    assert seconds < 25, f"{seconds:.1f} s to report {line}"
    assert list(store.list(small_config.storage_root)) == [], "ingest worked before it checked the tracking server"
