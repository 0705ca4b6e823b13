"""Faults against real local services, each test with its own short-lived SeaweedFS (and MLflow server): the
object store frozen (SIGSTOP) mid-train, killed mid-augment and frozen mid-upload (a multipart upload with a part
stored), the tracking server stopped mid-train. Each time: one clear error line naming the service within the
configured bound, no half-written object ever used, and a rerun once the services are back that ends exactly where
an undisturbed run does.

The limits are shortened for the test (a 2 s read timeout, one retry); `test_cli_service_errors.py` checks that the
default limits report a frozen store within about a minute.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import mlflow
import psutil
import pytest
import torch
import yaml
from adapter_files import adapter_weights

from artlora.config import with_inputs
from artlora.demo import sample_data
from artlora.io import services, settings, storage
from artlora.stages.augment import run as augment
from artlora.stages.ingest import run as ingest
from artlora.stages.train import checkpoints
from artlora.stages.train import run as train

# Every stage run here tracks to a local SQLite store copied from a migrated template (no schema migrations).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_db")]

# Short limits, so that each fault is reported in seconds: 2 tries of 2 s to connect and 2 s to answer.
LIMITS = {
    settings.S3_CONNECT_TIMEOUT: "2",
    settings.S3_READ_TIMEOUT: "2",
    settings.S3_RETRIES: "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
}
BOUND = 30  # seconds from the fault to the error line: the limits above, plus a loaded machine's slack


@pytest.fixture
def store_server(tmp_path, monkeypatch) -> Iterator[services.SeaweedFS]:
    """This test's own SeaweedFS, exported (with the short limits) to this process and the CLI it starts."""
    server = services.start_seaweedfs(tmp_path / "s3")
    for name, value in {**server.environment(), **LIMITS}.items():
        monkeypatch.setenv(name, value)
    try:
        yield server
    finally:
        server.kill()


def restarted(server: services.SeaweedFS) -> services.SeaweedFS:
    """The same store started again after a crash: its port, its keys, its data."""
    return services.start_seaweedfs(server.data_dir, s3_port=server.s3_port, credentials=server.credentials)


def cli(config, stage: str, *overrides: str) -> subprocess.Popen:
    sets = [arg for item in overrides for arg in ("--set", item)]
    command = [sys.executable, "-m", "artlora.cli", stage, "--config", str(config), *sets]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def wait_for(condition, what: str, timeout: float = 300, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(poll)


def fails_within(run: subprocess.Popen, command: str, *named: str) -> str:
    """The run ends within BOUND seconds with exit code 2 and one error line naming each of `named`."""
    started = time.monotonic()
    _, err = run.communicate(timeout=BOUND + 60)
    seconds = time.monotonic() - started
    lines = [line for line in err.splitlines() if line.startswith(f"artlora {command}: error: ")]
    assert run.returncode == 2 and len(lines) == 1, err[-4000:]
    assert all(text in lines[0] for text in named), lines[0]
    assert seconds < BOUND, f"{seconds:.0f} s to report: {lines[0]}"
    return lines[0]


def written_config(small_config, tmp_path: Path, **train: object) -> Path:
    data = small_config.model_dump(mode="json")
    data["train"] = {**data["train"], **train}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


# -- mid-train --------------------------------------------------------------------------------------------


def cache(small_config) -> str:
    """The latent cache of the sample data, in this test's store."""
    dataset = ingest.run(small_config.ingest)
    return augment.run(with_inputs(small_config.augment, dataset_uri=dataset.dataset_uri)).cache_uri


# A checkpoint every other step; no validation, which these tests do not need.
STEPS = {"max_steps": 12, "checkpoint_every": 2, "eval_every": 0, "early_stopping_patience": 0}


@pytest.fixture(scope="module")
def undisturbed(s3_endpoint, tiny_model_dir, sample_folder, _mlflow_db_template, tmp_path_factory):
    """The adapter of the training never disturbed, made once for the mid-train tests: the same config on the same
    samples, in the session's store under a root of its own (a cache of the same content trains the same weights
    in any store, under any root)."""
    from small_configs import small_config_for

    work = tmp_path_factory.mktemp("undisturbed")
    shutil.copyfile(_mlflow_db_template, work / "mlflow.db")  # tracked as the tests' runs are (mlflow_db)
    with mock.patch.dict(os.environ, {settings.WORK_DIR: str(work)}):
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
        config = small_config_for("s3://artlora-tests/faults-undisturbed", tiny_model_dir, sample_folder)
        result = train.run(with_inputs(config.train, cache_uri=cache(config), **STEPS))
        weights = adapter_weights(storage.get_storage(), result.adapter_uri)
    mlflow.set_tracking_uri(None)  # as conftest's mlflow_settings_end_with_the_test does after a test
    mlflow.set_registry_uri(None)
    settings.forget_boto3_keys()
    return weights


def test_store_frozen_mid_train_and_the_rerun_ends_as_undisturbed(store_server, small_config, tmp_path, undisturbed):
    cache_uri = cache(small_config)
    config = written_config(small_config, tmp_path, **STEPS)
    root = train.run_uri(with_inputs(small_config.train, cache_uri=cache_uri, **STEPS))
    store = storage.get_storage()
    run = cli(config, "train", f"train.cache_uri={cache_uri}")
    wait_for(lambda: checkpoints.latest_step(store, root) is not None, "a first checkpoint")
    store_server.process.suspend()  # the next checkpoint's write hangs
    fails_within(run, "train", store_server.url.removeprefix("http://"), "did not answer")
    store_server.process.resume()
    frozen_at = checkpoints.latest_step(store, root)

    result = train.run(with_inputs(small_config.train, cache_uri=cache_uri, **STEPS))
    assert result.resumed_from == frozen_at  # the newest complete checkpoint; an unfinished one is never used
    assert same_weights(adapter_weights(store, result.adapter_uri), undisturbed)


def test_tracking_stopped_mid_train_and_the_rerun_ends_as_undisturbed(
    store_server, small_config, tmp_path, monkeypatch, mlflow_db, undisturbed
):
    cache_uri = cache(small_config)
    log, backend = tmp_path / "mlflow.log", f"sqlite:///{mlflow_db}"
    artifacts = storage.join(small_config.storage_root, "mlflow-artifacts")
    server = services.start_mlflow(backend, artifacts, store_server.settings(), log)
    port = int(server.url.rsplit(":", 1)[1])
    for key, value in server.environment().items():
        monkeypatch.setenv(key, value)
    config = written_config(small_config, tmp_path, **STEPS)
    root = train.run_uri(with_inputs(small_config.train, cache_uri=cache_uri, **STEPS))
    store = storage.get_storage()
    try:
        run = cli(config, "train", f"train.cache_uri={cache_uri}")
        wait_for(lambda: checkpoints.latest_step(store, root) is not None, "a first checkpoint")
        server.stop()  # the next checkpoint's adapter, logged to MLflow, finds no server
        fails_within(run, "train", server.url, "MLFLOW_TRACKING_URI")
        stopped_at = checkpoints.latest_step(store, root)
        server = services.start_mlflow(backend, artifacts, store_server.settings(), log, port=port, admin=server.admin)
        result = train.run(with_inputs(small_config.train, cache_uri=cache_uri, **STEPS))
    finally:
        server.kill()
    assert result.resumed_from == stopped_at
    assert same_weights(adapter_weights(store, result.adapter_uri), undisturbed)


# -- mid-augment ------------------------------------------------------------------------------------------


def cache_content(store: storage.Storage, cache_uri: str) -> list[tuple]:
    """What a cache holds, wherever it is stored: per image its id, split, caption and shards' checksums."""
    entries = store.get_json(cache_uri)["entries"]
    return [(e["id"], e["split"], e["caption"], e["latents"]["sha256"], e["text"]["sha256"]) for e in entries]


def test_store_stopped_mid_augment_and_the_rerun_makes_the_undisturbed_cache(store_server, small_config, tmp_path):
    # Enough images that most are still to encode when the first shard is stored; small VAE batches that
    # straddle images (2 views each), so that the rerun batches the views it has left otherwise.
    sample_data.generate(tmp_path / "raw", count=40, size=64, seed=1)
    sections = {
        "ingest": small_config.ingest.model_copy(update={"source": str(tmp_path / "raw")}),
        "augment": small_config.augment.model_copy(update={"batch_size": 3}),
    }
    small_config = small_config.model_copy(update=sections)
    dataset = ingest.run(small_config.ingest)
    config = written_config(small_config, tmp_path)
    store = storage.get_storage()
    latents = storage.join(small_config.storage_root, "cache", "latents")
    run = cli(config, "augment", f"augment.dataset_uri={dataset.dataset_uri}")
    wait_for(lambda: next(store.list(latents), None) is not None, "a first cache shard", poll=0.02)
    psutil.Process(run.pid).suspend()  # held while the store goes down, so that it cannot finish meanwhile
    store_server.kill()  # a crash: whatever was in flight is lost
    psutil.Process(run.pid).resume()
    fails_within(run, "augment", store_server.url.removeprefix("http://"))
    server = restarted(store_server)
    try:
        rerun = augment.run(with_inputs(small_config.augment, dataset_uri=dataset.dataset_uri))
        assert rerun.reused_views > 0 and rerun.encoded_views > 0, "the store was not stopped mid-augment"
        undisturbed_root = storage.join(small_config.storage_root, "undisturbed")
        undisturbed = augment.run(
            with_inputs(small_config.augment, dataset_uri=dataset.dataset_uri, storage_root=undisturbed_root)
        )
        # Byte for byte the same shards: any shard the crash cut off was refused and encoded again.
        assert cache_content(store, rerun.cache_uri) == cache_content(store, undisturbed.cache_uri)
        for entry in store.get_json(rerun.cache_uri)["entries"]:
            assert hashlib.sha256(store.get_bytes(entry["latents"]["uri"])).hexdigest() == entry["latents"]["sha256"]
    finally:
        server.kill()


# -- mid-upload -------------------------------------------------------------------------------------------


def freeze_once_a_part_is_up(server: services.SeaweedFS, uri: str) -> threading.Thread:
    """A thread that suspends the store as soon as a multipart upload to `uri` has a part stored (S3's own
    ListMultipartUploads and ListParts say when)."""
    import boto3
    from botocore.exceptions import ClientError

    bucket, key = storage.parse_uri(uri)
    s3 = settings.s3_settings()
    client = boto3.client(
        "s3", endpoint_url=s3.url, aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key
    )

    def parts_stored() -> bool:
        try:
            uploads = [u for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) if u["Key"] == key]
            return any(client.list_parts(Bucket=bucket, Key=key, UploadId=u["UploadId"]).get("Parts") for u in uploads)
        except ClientError:  # the bucket is not made yet
            return False

    def watch() -> None:
        wait_for(parts_stored, "a first part of the upload", timeout=60, poll=0.02)
        server.process.suspend()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_store_frozen_mid_upload_leaves_no_object_and_the_retry_stores_it_whole(store_server, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "PART_SIZE", 5 * 2**20)  # S3's smallest part, for less to send: same upload
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 * 2**20))  # eight parts, three at a time: a multipart upload
    uri = "s3://fault-upload/models/big.bin"
    store = storage.get_storage()
    freezer = freeze_once_a_part_is_up(store_server, uri)
    started = time.monotonic()
    with pytest.raises(storage.StorageError, match="did not answer") as raised:
        store.put_file(uri, big)
    assert time.monotonic() - started < BOUND
    assert store_server.url.removeprefix("http://") in str(raised.value)
    freezer.join()
    store_server.process.resume()
    assert not store.exists(uri), "a cut-off multipart upload left an object"
    store.put_file(uri, big)
    assert hashlib.sha256(store.get_bytes(uri)).digest() == hashlib.sha256(big.read_bytes()).digest()
