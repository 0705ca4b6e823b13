"""Two augment runs at once, in two processes, on a cold cache: both finish, and train accepts the cache each one
made (every shard it reads matches its index's checksum)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import yaml

from artlora.config import with_inputs
from artlora.data import latent_cache
from artlora.stages import ingest, train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_db")]


def test_two_augments_at_once_leave_caches_that_train_accepts(small_config, store, tmp_path):
    dataset = ingest.run(small_config.ingest)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(small_config.model_dump(mode="json")))
    # Other batch sizes batch the views differently, as a scheduled run and a manual one might.
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "artlora.cli", "augment", "--config", str(config)]
            + ["--set", f"augment.dataset_uri={dataset.dataset_uri}", "--set", f"augment.batch_size={batch}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch in (16, 5)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-3000:] for _, err in outputs]
    results = [json.loads(out) for out, _ in outputs]
    assert all(result["encoded_views"] > 0 for result in results), "a run found the cache warm: not a race"

    for cache_uri in {result["cache_uri"] for result in results}:
        index = store.get_json(cache_uri)
        shards = [entry["latents"] for entry in index["entries"]] + [index["empty_text"]]
        for shard in shards:
            assert hashlib.sha256(store.get_bytes(shard["uri"])).hexdigest() == shard["sha256"], shard["uri"]
        assert len(latent_cache.load_split(cache_uri, "train")) > 0
        trained = train.run(with_inputs(small_config.train, cache_uri=cache_uri, max_steps=2, checkpoint_every=2))
        assert trained.steps == 2
