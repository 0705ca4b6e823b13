"""Two augment runs at once, in two processes, on a cold cache: both finish, and train accepts the cache each one
made (every shard it reads matches its index's checksum)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from artlora.config import with_inputs
from artlora.data import latent_cache
from artlora.stages.ingest import run as ingest
from artlora.stages.train import run as train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_db")]


def wait_until_encoding(log: Path, run: subprocess.Popen) -> None:
    """Until the run has found which shards are missing and begun encoding them (its progress bar is up)."""
    deadline = time.monotonic() + 300
    while "encode:" not in log.read_text(errors="replace"):
        assert run.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no encoding within 300 s"
        time.sleep(0.02)


def test_two_augments_at_once_leave_caches_that_train_accepts(small_config, store, tmp_path):
    dataset = ingest.run(small_config.ingest)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(small_config.model_dump(mode="json")))

    def augment(batch: int) -> tuple[subprocess.Popen, Path]:
        # Other batch sizes make other latents in their last bits: the two runs have other bytes for one key.
        sets = ["--set", f"augment.dataset_uri={dataset.dataset_uri}", "--set", f"augment.batch_size={batch}"]
        command = [sys.executable, "-m", "artlora.cli", "augment", "--config", str(config), *sets]
        log = tmp_path / f"augment-{batch}.log"
        with log.open("w") as err:
            return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True), log

    # Both runs find the cache cold and encode every image, at once: the first is held (SIGSTOP) as it begins
    # encoding, and let go when the second begins, whatever either took to start.
    first, first_log = augment(1)
    wait_until_encoding(first_log, first)
    psutil.Process(first.pid).suspend()
    second, second_log = augment(16)
    wait_until_encoding(second_log, second)
    psutil.Process(first.pid).resume()
    outputs = [run.communicate(timeout=600)[0] for run in (first, second)]

    logs = [log.read_text()[-3000:] for log in (first_log, second_log)]
    assert [run.returncode for run in (first, second)] == [0, 0], logs
    results = [json.loads(out) for out in outputs]
    assert [result["reused_views"] for result in results] == [0, 0], "a run found shards already stored"
    for cache_uri in {result["cache_uri"] for result in results}:
        index = store.get_json(cache_uri)
        for shard in [entry["latents"] for entry in index["entries"]] + [index["empty_text"]]:
            assert hashlib.sha256(store.get_bytes(shard["uri"])).hexdigest() == shard["sha256"], shard["uri"]
        assert len(latent_cache.load_split(cache_uri, "train")) > 0
        trained = train.run(with_inputs(small_config.train, cache_uri=cache_uri, max_steps=2, checkpoint_every=2))
        assert trained.steps == 2
