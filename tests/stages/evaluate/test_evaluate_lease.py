"""Evaluate writes its results beside the adapter (`<run>/eval/`) under the run folder's lease: two identical runs
evaluating the same adapter write one after the other, never at once (issue 21)."""

from __future__ import annotations

import threading
import time

import mlflow
import pytest
from PIL import Image

from artlora import contracts
from artlora.config import EvaluateConfig
from artlora.io import lease, storage, tracking
from artlora.stages.evaluate import run as evaluate

pytestmark = pytest.mark.usefixtures("mlflow_db")


def test_evaluation_results_are_written_only_under_the_run_folders_lease(store, bucket, monkeypatch):
    monkeypatch.setattr(lease, "POLL_S", 0.05)
    root = storage.join(bucket, "runs", "key")
    tracking.configure()
    mlflow.set_experiment("lease")  # this test's store's, not whichever an earlier test of the process made active
    with mlflow.start_run() as training:  # the training's run, which evaluate continues
        pass
    inputs = {
        "adapter_uri": contracts.adapter_folder(root),
        "cache_uri": f"{bucket}/cache",
        "run_id": training.info.run_id,
    }
    config = EvaluateConfig(storage_root=bucket, base_model="tiny", **inputs)
    metrics_uri = storage.join(contracts.evaluation_folder(config.given("adapter_uri")), contracts.EVALUATION_METRICS)

    with lease.Lease(store, contracts.lease_object(root)):  # an identical run writing there
        writer = threading.Thread(
            target=evaluate.publish,
            args=(config, {"m": 1.0}, "<html>", Image.new("RGB", (2, 2)), Image.new("RGB", (2, 2))),
        )
        writer.start()
        time.sleep(1.0)
        assert writer.is_alive() and not store.exists(metrics_uri), "it waits while the other run holds the folder"
    writer.join(timeout=60)
    assert not writer.is_alive() and store.get_json(metrics_uri) == {"m": 1.0}
    assert not store.exists(contracts.lease_object(root)), "and releases it"
