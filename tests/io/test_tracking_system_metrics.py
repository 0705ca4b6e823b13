"""System metrics: a stage that asks for them gets MLflow's CPU/memory/disk/network samples, for real, in its run."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from artlora.config import TrainConfig
from artlora.io import runs, storage

pytestmark = pytest.mark.usefixtures("mlflow_db")

SAMPLING_INTERVAL_S = 0.2


@pytest.fixture
def config(store, bucket) -> TrainConfig:
    # The run's config artifact goes to the object store, whose bucket an operator (or ingest) creates first.
    name = storage.parse_uri(bucket)[0]
    if not store.client.bucket_exists(name):  # it is shared by every test's prefix
        store.client.make_bucket(name)
    return TrainConfig(storage_root=bucket, base_model="tiny/model")


@pytest.fixture
def fast_sampling(monkeypatch):
    """MLflow's own variables, read when the monitor starts; monkeypatch restores them after the test."""
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", str(SAMPLING_INTERVAL_S))
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")


@pytest.fixture
def monitor_log():
    """Records at INFO and above from MLflow's system metrics code. MLflow's logger does not propagate to the
    root logger, so caplog would not see them: a handler on it does."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("mlflow")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(i * i for i in range(10_000))


def _history(run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient().get_metric_history(run_id, key)]


def _monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor" and t.is_alive()]


@pytest.mark.usefixtures("fast_sampling")
def test_system_metrics_are_logged_and_continue_in_a_resumed_run(config, monitor_log):
    with runs.stage_run("train", config, system_metrics=True) as run:
        _busy(1.0)
    run_id = run.info.run_id
    assert not _monitor_threads()  # the run's end stopped the sampling thread

    metrics = runs.run_metrics(run_id)
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        assert key in metrics and len(_history(run_id, key)) >= 1
    assert {"system/disk_usage_megabytes", "system/network_receive_megabytes"} <= metrics.keys()
    # No NVIDIA driver on the test machines: MLflow leaves GPU metrics out without a warning.
    assert not [key for key in metrics if key.startswith("system/gpu")]
    first_steps = _history(run_id, "system/cpu_utilization_percentage")

    # A resumed training continues the run: its samples carry on after the steps already logged.
    with runs.stage_run("train", config, run_id=run_id, system_metrics=True):
        _busy(0.8)
    assert not _monitor_threads()
    steps = _history(run_id, "system/cpu_utilization_percentage")
    assert len(steps) > len(first_steps) and min(set(steps) - set(first_steps)) > max(first_steps)

    ours = [r for r in monitor_log if r.name.startswith("mlflow.system_metrics") or "system metrics" in r.msg]
    assert not [r.getMessage() for r in ours if r.levelno >= logging.WARNING]
    # At most four lines a run (started, no GPU, stopping, stopped), however many samples it took.
    assert len(ours) <= 2 * 4, [r.getMessage() for r in ours]


def test_no_system_metrics_unless_asked(config, monkeypatch):
    # MLflow's global switch in the environment does not turn them on for a stage that did not ask.
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", str(SAMPLING_INTERVAL_S))
    with runs.stage_run("train", config) as run:
        assert not _monitor_threads()
        _busy(0.5)
    assert not [key for key in runs.run_metrics(run.info.run_id) if key.startswith("system/")]
