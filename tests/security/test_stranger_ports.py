"""Another local user (`nobody`, no keys) against every port of artlora's local services, as `artlora services up`
starts them: nothing is read, nothing is written, the registry does not change.

One store and one MLflow server for the module, started as start_seaweedfs / start_mlflow start them for
`artlora services`. Before this work the filer's HTTP port read and wrote every bucket for anyone, the master
handed out volume write tokens, and MLflow took any request (issue 21)."""

from __future__ import annotations

import json
import os
import secrets
from unittest import mock

import pytest
from mlflow.tracking import MlflowClient
from stranger import listening, needs_another_user, probe, unix_sockets

from artlora.io import services, storage

BUCKET, KEY = "guarded", "models/tiny-sd/model_index.json"
OWNERS = f"painted by the owner {secrets.token_hex(8)}"
BIG = OWNERS.encode() * 40000  # about 1.5 MB: kept in a volume, not in the filer's own records
MODEL = "guarded-style"

# What a stranger may still get with a plain GET, per part of the store: the health checks, and the master's and
# the volume server's status pages (sizes and volume counts, no object names or contents).
HEALTH = {"/status", "/healthz"}
OPEN_PAGES = {"s3": HEALTH, "master": {*HEALTH, "/", "/ui/index.html", "/cluster/status"}, "volume": HEALTH}


def store_requests() -> list[tuple[str, str, str | None]]:
    reads = [
        "/",
        "/buckets/",
        f"/buckets/{BUCKET}/{KEY}",
        f"/{BUCKET}/{KEY}",
        f"/{BUCKET}?list-type=2",
        "/dir/status",
        "/dir/assign",
        "/dir/lookup?volumeId=1",
        "/dir/lookup?fileId=1,01&read=yes",
        "/vol/status",
        "/cluster/status",
        "/status",
        "/healthz",
        "/ui/index.html",
        "/1,01",
        "/metrics",
    ]
    writes = [
        ("PUT", f"/{BUCKET}/planted.txt"),
        ("POST", f"/buckets/{BUCKET}/planted.txt"),
        ("POST", f"/buckets/{BUCKET}/{KEY}"),
        ("PUT", f"/buckets/{BUCKET}/{KEY}"),
        ("DELETE", f"/buckets/{BUCKET}/{KEY}"),
        ("DELETE", f"/{BUCKET}/{KEY}"),
        ("POST", "/submit"),
        ("POST", "/1,01"),
        ("POST", "/vol/grow?count=1"),
        ("POST", "/col/delete?collection=guarded"),
    ]
    return [("GET", path, None) for path in reads] + [(method, path, "planted") for method, path in writes]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    handle = services.start_seaweedfs(tmp_path_factory.mktemp("guarded") / "s3")
    s3 = storage.Storage(storage.client_for(handle.settings()))
    s3.put_bytes(f"s3://{BUCKET}/{KEY}", OWNERS.encode())
    s3.put_bytes(f"s3://{BUCKET}/big.bin", BIG)
    yield handle
    handle.kill()


@pytest.fixture(scope="module")
def tracking(store, tmp_path_factory):
    """An MLflow server with a registered version (a tag, an alias, an artifact) for strangers to try."""
    folder = tmp_path_factory.mktemp("guarded-mlflow")
    server = services.start_mlflow(
        f"sqlite:///{folder / 'mlflow.db'}", "s3://mlflow/a", store.settings(), folder / "log"
    )
    with mock.patch.dict(os.environ, server.environment()):
        client = MlflowClient(server.url)
        run = client.create_run(client.create_experiment("guarded"))
        client.log_text(run.info.run_id, OWNERS, "model/MLmodel")
        client.create_registered_model(MODEL)
        client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run.info.run_id, {"base_model": "tiny"})
        client.set_registered_model_alias(MODEL, "champion", "1")
    yield server, run
    server.kill()


def registry_state(server: services.MlflowServer, run_id: str) -> tuple:
    with mock.patch.dict(os.environ, server.environment()):
        client = MlflowClient(server.url)
        versions = client.search_model_versions(f"name='{MODEL}'")
        model = client.get_registered_model(MODEL)
        artifact = client.download_artifacts(run_id, "model/MLmodel")
        with open(artifact) as file:
            content = file.read()
    return [(v.version, v.tags, v.source) for v in versions], model.aliases, model.tags, content


def test_the_store_listens_on_loopback_on_its_own_ports_only(store):
    assert listening(store.pid) == {("127.0.0.1", port) for port in store.ports}
    assert len(store.ports) == 8  # s3, master, volume server, filer: HTTP and gRPC


@needs_another_user
def test_no_port_of_the_store_gives_a_stranger_anything(store):
    s3 = storage.Storage(storage.client_for(store.settings()))
    before = sorted(s3.list(f"s3://{BUCKET}"))
    http_ports = services.weed_ports(store.s3_port)
    grpc_ports = [port + services.WEED_GRPC_OFFSET for port in http_ports.values()]

    report = probe(list(store.ports), store_requests(), unix_sockets(store.pid))

    for part, port in http_ports.items():
        for answer in report["ports"][str(port)]["http"]:
            where = f"{part} port {port}: {answer['method']} {answer['path']} -> {answer.get('status')}"
            body = answer.get("body", "")
            # Neither a content nor a name the stranger did not ask for (errors echo the key they asked for).
            assert OWNERS not in body and "big.bin" not in body, where
            if answer["status"] == 200:
                assert answer["method"] == "GET" and answer["path"] in OPEN_PAGES.get(part, set()), where
            assert answer["status"] is None or not 200 <= answer["status"] < 300 or answer["method"] == "GET", where
    for port in grpc_ports:
        assert report["ports"][str(port)]["tls"] == "refused", port  # gRPC wants our CA's client certificate
        assert all(answer["status"] is None for answer in report["ports"][str(port)]["http"]), port
    assert report["unix_sockets"] and set(report["unix_sockets"].values()) == {"permission denied"}
    assert sorted(s3.list(f"s3://{BUCKET}")) == before
    assert s3.get_bytes(f"s3://{BUCKET}/{KEY}") == OWNERS.encode()
    assert s3.get_bytes(f"s3://{BUCKET}/big.bin") == BIG


def test_the_store_refuses_the_s3_api_without_keys(store):
    stranger = services.SeaweedFS(**{**store.__dict__, "credentials": services.Credentials.generate()})
    with pytest.raises(storage.StorageError, match="InvalidAccessKeyId|SignatureDoesNotMatch"):
        storage.Storage(storage.client_for(stranger.settings())).get_bytes(f"s3://{BUCKET}/{KEY}")


@needs_another_user
def test_mlflow_gives_a_stranger_nothing_and_changes_nothing(tracking):
    server, run = tracking
    port = int(server.url.rsplit(":", 1)[1])
    before = registry_state(server, run.info.run_id)
    artifact = f"/api/2.0/mlflow-artifacts/artifacts/{run.info.experiment_id}/{run.info.run_id}/artifacts/model"
    tag = json.dumps({"name": MODEL, "version": "1", "key": "base_model", "value": "attacker/model"})
    alias = json.dumps({"name": MODEL, "alias": "champion", "version": "1"})
    requests = [
        ("GET", "/", None),
        ("GET", "/version", None),
        ("GET", "/api/2.0/mlflow/experiments/search?max_results=5", None),
        ("GET", "/ajax-api/2.0/mlflow/registered-models/search", None),
        ("GET", f"/api/2.0/mlflow/model-versions/get?name={MODEL}&version=1", None),
        ("GET", f"{artifact}/MLmodel", None),
        ("GET", f"/get-artifact?path=model/MLmodel&run_uuid={run.info.run_id}", None),
        ("POST", "/graphql", '{"query": "{ __schema { types { name } } }"}'),
        ("POST", "/api/2.0/mlflow/model-versions/set-tag", tag),
        ("POST", "/ajax-api/2.0/mlflow/model-versions/set-tag", tag),
        ("POST", "/api/2.0/mlflow/registered-models/alias", alias),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", json.dumps({"name": MODEL})),
        ("POST", "/api/2.0/mlflow/users/create", json.dumps({"username": "intruder", "password": "x" * 12})),
        ("PUT", f"{artifact}/MLmodel", "planted"),
        ("PUT", f"{artifact}/python_model.pkl", "planted"),
    ]

    report = probe([port], requests)

    statuses = {(a["method"], a["path"]): a["status"] for a in report["ports"][str(port)]["http"]}
    assert set(statuses.values()) == {401}, statuses
    assert registry_state(server, run.info.run_id) == before
