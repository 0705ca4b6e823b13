"""The production tracking path: a real `mlflow server` (PostgreSQL backend, artifacts proxied to S3), reached via
MLFLOW_TRACKING_URI."""

from __future__ import annotations

import os

from artlora.config import with_inputs
from artlora.io import model_registry, tracking
from artlora.stages.evaluate import run as evaluate
from artlora.stages.register import run as register
from artlora.stages.train import run as train


def test_stages_track_and_register_through_a_tracking_server(
    tracking_server, small_config, latent_cache, store, tmp_path
):
    trained = train.run(with_inputs(small_config.train, cache_uri=latent_cache, learning_rate=0.01))
    evaluate.run(
        with_inputs(
            small_config.evaluate, adapter_uri=trained.adapter_uri, cache_uri=latent_cache, run_id=trained.run_id
        )
    )
    # The session's server is shared: a model name of this test's own.
    registering = with_inputs(
        small_config.register, adapter_uri=trained.adapter_uri, run_id=trained.run_id, model_name="tracking-server"
    )
    result = register.run(registering)

    assert tracking.configure() == tracking_server
    version = model_registry.version_by_alias("tracking-server", "champion")
    assert str(version.version) == result.version
    # The adapter went through the server's artifact proxy into the object store, and comes back from there.
    assert any(uri.endswith("pytorch_lora_weights.safetensors") for uri in store.list("s3://mlflow-server/artifacts"))
    adapter_dir = model_registry.download_version(version, tmp_path)
    assert "pytorch_lora_weights.safetensors" in os.listdir(adapter_dir)
