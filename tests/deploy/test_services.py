"""SeaweedFS and MLflow started here with the kind overlay's own commands and arguments (only addresses, ports and
the data folder changed for loopback), with PostgreSQL as MLflow's backend: the flags the Deployments pass work
together. SeaweedFS gets the built Secret artlora-seaweedfs-security (made by `artlora services seaweedfs-secret`)
where the Deployment mounts it, under a folder of the test's, so its filer, volume server and master are locked as
in the cluster. The images themselves are not run: weed and mlflow are the releases the images hold."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import botocore.config
import botocore.exceptions
import psutil
import pytest
import requests
from deploy_checks import (
    K8S,
    PIPELINE_NAMESPACES,
    REPO,
    SERVICES_NAMESPACE,
    TOOLS_BIN,
    container,
    find,
    flag,
    run,
    tool,
)
from local_services import mount_secret, process

from artlora.io.services import free_port_block

KEYS = {"AWS_ACCESS_KEY_ID": "deploycheckkey", "AWS_SECRET_ACCESS_KEY": "deploy-check-secret-for-tests"}
PASSWORD = "deploy-check-password"  # PostgreSQL's, for the mlflow user
SECURITY = "artlora-seaweedfs-security"
WEED_PARTS = ("s3", "master", "volume", "filer")
# What the probes of tests/security send as another user: run here as this one (the lock is the JWT, not the user).
PROBE = REPO / "tests" / "security" / "stranger_probe.py"
# What the master still shows without a JWT: its status pages (sizes and volume counts, no names, no contents).
MASTER_PAGES = {"/", "/cluster/status", "/healthz", "/status"}


def s3_client(endpoint: str, secret: str = KEYS["AWS_SECRET_ACCESS_KEY"]):
    # The first write into a new bucket makes SeaweedFS grow volumes for it, and until they exist it answers
    # InternalError ("no writable volumes"; seen here for about a second under load). Real clients retry that
    # (minio-go, which the KFP launcher uses, 10 times with backoff); so does this one, where boto3's default
    # gives up after 2 quick retries.
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 10, "mode": "standard"}),
    )


def test_weed_is_the_release_the_image_tag_names(manifests):
    image = container(manifests["kind"], "Deployment/seaweedfs")["image"]
    version = re.search(r"\b(\d+\.\d+)\b", run(tool("weed"), "version").stdout).group(1)
    assert image.endswith(f":{version}")


@dataclass(frozen=True)
class Store:
    endpoint: str  # S3
    pid: int
    ports: dict[str, int]  # the HTTP port of each part; each gRPC port is 10000 above
    config_dir: Path  # the Secret's files, where the pod mounts them (below a folder of the test's)


@pytest.fixture(scope="module")
def store(manifests, tmp_path_factory):
    """`weed` with the Deployment's arguments and the Secret's files where it mounts them."""
    weed = container(manifests["kind"], "Deployment/seaweedfs")
    assert weed["command"] == ["/usr/bin/weed"]
    root = tmp_path_factory.mktemp("seaweedfs-pod")
    mounted = mount_secret(manifests["kind"], "Deployment/seaweedfs", SECURITY, root)
    config_dir = root / mounted.lstrip("/")
    (root / "data").mkdir()
    ports = {name: free_port_block(1, also_above=10000) for name in WEED_PARTS}
    loopback = {
        "-dir=/data": f"-dir={root / 'data'}",
        "-s3.port=8333": f"-s3.port={ports['s3']}",
        "-s3.ip.bind=0.0.0.0": "",
        f"-config_dir={mounted}": f"-config_dir={config_dir}",
    }
    assert f"-config_dir={mounted}" in weed["args"]
    args = [loopback.get(arg, arg) for arg in weed["args"] if loopback.get(arg, arg)]
    args += [f"-{name}.port={ports[name]}" for name in ("master", "volume", "filer")]
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    env = {**os.environ, **KEYS}
    with process([str(TOOLS_BIN / "weed"), *args], env, f"{endpoint}/healthz", root / "log", timeout=120) as started:
        yield Store(endpoint, started.pid, ports, config_dir)
    for port in ports.values():  # weed opens its local gRPC sockets in /tmp (why the pod mounts one)
        for socket_file in Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock"):
            socket_file.unlink()
        for socket_file in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            socket_file.unlink()


def test_the_store_takes_writes_with_its_keys_and_creates_the_bucket(store):
    client = s3_client(store.endpoint)
    # No bucket is created first: the first upload creates it (the launcher and MLflow write without creating one).
    client.put_object(Bucket="artlora", Key="kfp/check.txt", Body=b"written")
    assert client.get_object(Bucket="artlora", Key="kfp/check.txt")["Body"].read() == b"written"
    wrong = s3_client(store.endpoint, secret="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        wrong.list_objects_v2(Bucket="artlora")


def security_toml(manifests) -> tuple[dict, dict[str, bytes]]:
    """The built Secret's security.toml, read, and all its files."""
    secret = find(manifests["kind"], "Secret", SECURITY, SERVICES_NAMESPACE)
    files = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    return tomllib.loads(files["security.toml"].decode()), files


def test_the_store_is_locked_by_the_secret_it_mounts(manifests):
    """weed reads security.toml from the Secret's mount; the file signs every part's HTTP with keys of its own and
    names certificates that the same Secret holds, at that mount."""
    weed = container(manifests["kind"], "Deployment/seaweedfs")
    config_dir = flag(weed["args"], "config_dir")
    assert weed["args"].index(f"-config_dir={config_dir}") < weed["args"].index("server")  # a global flag of weed
    assert {mount["mountPath"] for mount in weed["volumeMounts"]} >= {config_dir}
    config, files = security_toml(manifests)
    assert set(files) == {"security.toml", "ca.crt", "node.crt", "node.key"}
    assert b"PRIVATE KEY" in files["node.key"] and b"CERTIFICATE" in files["node.crt"]
    signing = config["jwt"]
    keys = [signing["signing"]["key"], signing["signing"]["read"]["key"]]
    keys += [signing["filer_signing"]["key"], signing["filer_signing"]["read"]["key"]]
    assert len(set(keys)) == 4 and all(len(key) >= 32 for key in keys)
    named = [config["grpc"]["ca"]] + [
        path for part in config["grpc"].values() if isinstance(part, dict) for path in part.values()
    ]
    assert {Path(path).parent for path in named} == {Path(config_dir)}
    assert {Path(path).name for path in named} == {"ca.crt", "node.crt", "node.key"}
    assert config["access"]["ui"] is False


def test_the_store_listens_on_its_four_parts_and_their_grpc_twins_only(store):
    """No admin server, WebDAV, Iceberg catalog or Lance namespace: S3, and the master, volume server and filer
    (and their gRPC), which the pod keeps on loopback."""
    process = psutil.Process(store.pid)
    members = [process, *process.children(recursive=True)]
    listening = {c.laddr for m in members for c in m.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    expected = {("127.0.0.1", port + offset) for port in store.ports.values() for offset in (0, 10000)}
    assert {(address.ip, address.port) for address in listening} == expected


def jwt(key: str, claims: dict) -> str:
    """An HS256 JSON web token, as weed signs one."""

    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = part(b'{"alg":"HS256","typ":"JWT"}') + b"." + part(json.dumps(claims).encode())
    return (head + b"." + part(hmac.new(key.encode(), head, hashlib.sha256).digest())).decode()


def chunk(store: Store, path: str) -> str:
    """The file id of the volume needle that holds a filer entry's data: the owner's `weed shell`, with the
    Secret's certificates (gRPC)."""
    command = [
        str(TOOLS_BIN / "weed"),
        f"-config_dir={store.config_dir}",
        "shell",
        f"-master=127.0.0.1:{store.ports['master']}",
    ]
    shell = subprocess.run(command, input=f"fs.meta.cat {path}\n", capture_output=True, text=True, timeout=120)
    entry, _ = json.JSONDecoder().raw_decode(shell.stdout[shell.stdout.index("{") :])
    (only,) = entry["chunks"]
    return only["fileId"]


def test_filer_volume_and_master_neither_read_nor_write_without_a_jwt(store, manifests):
    """Every request a stranger would send (tests/security's probe): nothing read, nothing written, no gRPC
    without the CA's client certificate, while S3 with its keys goes on; the volume server's read with a token
    signed by the Secret's key answers, so the refusals are the JWT's."""
    client = s3_client(store.endpoint)
    owners = f"painted by the owner {secrets.token_hex(8)} ".encode() * 40000  # about 1.5 MB: kept in a volume
    client.put_object(Bucket="artlora", Key="guarded/big.bin", Body=owners)
    fid = chunk(store, "/buckets/artlora/guarded/big.bin")
    volume, needle = fid.split(",")
    planted_fid = f"{volume},{int(needle[:-8], 16) + 1000:x}{needle[-8:]}"  # a free needle of the same volume
    attempts = {
        "filer": [
            ("GET", "/buckets/artlora/guarded/big.bin", None),
            ("GET", "/buckets/artlora/?limit=100", None),
            ("POST", "/buckets/artlora/planted.txt", "planted"),
            ("PUT", "/buckets/artlora/planted.txt", "planted"),
            ("DELETE", "/buckets/artlora/guarded/big.bin", None),
        ],
        "volume": [("GET", f"/{fid}", None), ("POST", f"/{planted_fid}", "planted"), ("DELETE", f"/{fid}", None)],
        "master": [
            ("GET", "/dir/assign", None),
            ("GET", f"/dir/lookup?volumeId={volume}", None),
            ("POST", "/submit", "planted"),
            ("POST", "/vol/grow?count=1", None),
            *(("GET", page, None) for page in sorted(MASTER_PAGES)),
        ],
    }
    for part, sent in attempts.items():
        report = probe([store.ports[part], store.ports[part] + 10000], sent)
        for answer in report[str(store.ports[part])]["http"]:
            where = f"{part}: {answer['method']} {answer['path']} -> {answer['status']}"
            assert owners[:40].decode() not in answer.get("body", ""), where
            if answer["status"] is not None and 200 <= answer["status"] < 300:
                assert part == "master" and answer["method"] == "GET" and answer["path"] in MASTER_PAGES, where
        assert report[str(store.ports[part] + 10000)]["tls"] == "refused", part
    listed = client.list_objects_v2(Bucket="artlora", Prefix="planted")
    assert listed["KeyCount"] == 0
    assert client.get_object(Bucket="artlora", Key="guarded/big.bin")["Body"].read() == owners
    config, _ = security_toml(manifests)
    token = jwt(config["jwt"]["signing"]["read"]["key"], {"fid": fid, "exp": int(time.time()) + 10})
    signed = requests.get(
        f"http://127.0.0.1:{store.ports['volume']}/{fid}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert signed.status_code == 200 and signed.content == owners


def probe(ports: list[int], sent: list[tuple[str, str, str | None]]) -> dict:
    """tests/security's stranger probe, run as this user: each port's answers to the requests, and a TLS
    handshake without a client certificate."""
    request = json.dumps({"ports": ports, "http": sent})
    done = subprocess.run(
        [sys.executable, "-I", str(PROBE)], input=request, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["ports"]


@pytest.fixture(scope="module")
def mlflow_server(manifests, store, postgres, tmp_path_factory):
    """`mlflow server` with the Deployment's command, arguments and literal environment, its password in
    PGPASSWORD only; yields its URL and process id."""
    server = container(manifests["kind"], "Deployment/mlflow")
    backend = urlsplit(flag(server["args"], "backend-store-uri"))
    # The session's PostgreSQL, with the manifests' role and database (the role needs the password too).
    postgres.create_database(backend.path.lstrip("/"), user=backend.username, password=PASSWORD)
    port = free_port_block(1)
    local_backend = backend._replace(netloc=f"{backend.username}@127.0.0.1:{postgres.port}")
    loopback = {
        "--host=0.0.0.0": "--host=127.0.0.1",
        "--port=5000": f"--port={port}",
        f"--backend-store-uri={backend.geturl()}": f"--backend-store-uri={local_backend.geturl()}",
    }
    args = [loopback.get(arg, arg) for arg in server["args"]]
    literal = {variable["name"]: variable["value"] for variable in server["env"] if "value" in variable}
    folder = tmp_path_factory.mktemp("mlflow")
    # The ConfigMap's basic-auth settings, its users in the same database (reached on loopback here).
    auth = find(manifests["kind"], "ConfigMap", "mlflow-auth", "artlora")["data"]["basic_auth.ini"]
    (folder / "basic_auth.ini").write_text(auth.replace(backend.netloc, local_backend.netloc))
    env = {
        **os.environ,
        **literal,
        **KEYS,
        **admin_environment(server),
        "PGPASSWORD": PASSWORD,
        "MLFLOW_S3_ENDPOINT_URL": store.endpoint,
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "basic_auth.ini"),
    }
    # The mlflow of the environment running the tests: the release the image holds (both install pyproject's pin).
    command = [str(Path(sys.executable).parent / server["command"][0]), *server["command"][1:]]
    health = f"http://127.0.0.1:{port}/health"
    with process([*command, *args], env, health, folder / "log", timeout=180) as started:
        yield f"http://127.0.0.1:{port}", started.pid


def example_login() -> dict[str, str]:
    """mlflow.env.example's values: what the Secret artlora-mlflow holds in this check."""
    lines = (K8S / "secrets" / "mlflow.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def admin_environment(server: dict) -> dict[str, str]:
    """The variables the Deployment takes from the Secret artlora-mlflow."""
    refs = [v for v in server["env"] if v.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "artlora-mlflow"]
    return {v["name"]: example_login()[v["valueFrom"]["secretKeyRef"]["key"]] for v in refs}


def login() -> tuple[str, str]:
    values = example_login()
    return values["MLFLOW_TRACKING_USERNAME"], values["MLFLOW_TRACKING_PASSWORD"]


def test_mlflow_lets_in_only_the_secrets_login(manifests, mlflow_server):
    mlflow_url, _ = mlflow_server
    assert "--app-name=basic-auth" in container(manifests["kind"], "Deployment/mlflow")["args"]
    search = f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    host = {"Host": "localhost:5000"}
    assert requests.get(search, headers=host, timeout=30).status_code == 401
    assert requests.get(f"{mlflow_url}/", headers=host, timeout=30).status_code == 401
    assert requests.get(search, headers=host, auth=(login()[0], "guessed"), timeout=30).status_code == 401
    assert requests.get(search, headers=host, auth=login(), timeout=30).status_code == 200


def test_mlflow_accepts_the_pipelines_host_and_refuses_others(manifests, mlflow_server):
    mlflow_url, _ = mlflow_server
    endpoints = find(manifests["kind"], "ConfigMap", "artlora-endpoints", PIPELINE_NAMESPACES["kind"])["data"]
    tracking = urlsplit(endpoints["MLFLOW_TRACKING_URI"])
    search = f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, headers={"Host": tracking.netloc}, auth=login(), timeout=30).status_code == 200
    assert requests.get(search, headers={"Host": "localhost:5000"}, auth=login(), timeout=30).status_code == 200
    assert requests.get(search, headers={"Host": "attacker.example:5000"}, auth=login(), timeout=30).status_code == 403
    # The kubelet's probes send the pod's address as Host; MLflow exempts /health.
    assert requests.get(f"{mlflow_url}/health", headers={"Host": "10.244.0.7:5000"}, timeout=30).status_code == 200


def test_mlflow_keeps_runs_in_postgres_and_proxies_artifacts_to_the_store(manifests, mlflow_server, store):
    mlflow_url, _ = mlflow_server
    host = {"Host": "localhost:5000"}
    api = f"{mlflow_url}/api/2.0"
    experiment = requests.post(
        f"{api}/mlflow/experiments/create", json={"name": "deploy"}, headers=host, auth=login(), timeout=30
    )
    assert experiment.status_code == 200, experiment.text  # a row written through the password-protected backend
    run_info = requests.post(
        f"{api}/mlflow/runs/create",
        json={"experiment_id": experiment.json()["experiment_id"]},
        headers=host,
        auth=login(),
        timeout=30,
    ).json()["run"]["info"]
    artifacts = run_info["artifact_uri"].removeprefix("mlflow-artifacts:/")
    upload = requests.put(
        f"{api}/mlflow-artifacts/artifacts/{artifacts}/a.txt", data=b"weights", headers=host, auth=login(), timeout=30
    )
    assert upload.status_code == 200, upload.text
    destination = urlsplit(flag(container(manifests["kind"], "Deployment/mlflow")["args"], "artifacts-destination"))
    key = f"{destination.path.strip('/')}/{artifacts}/a.txt"
    assert s3_client(store.endpoint).get_object(Bucket=destination.hostname, Key=key)["Body"].read() == b"weights"


def test_mlflow_runs_its_web_workers_only(manifests, mlflow_server):
    """The Deployment switches off MLflow's job runner and its task consumers (8 more processes, about 0.7 GB more
    resident, measured here), which artlora does not use."""
    _, pid = mlflow_server
    workers = int(flag(container(manifests["kind"], "Deployment/mlflow")["args"], "workers"))
    children = psutil.Process(pid).children(recursive=True)
    commands = [" ".join(child.cmdline()) for child in children]
    assert not [command for command in commands if "huey" in command or "job_runner" in command], commands
    assert len(children) <= workers + 2, commands  # uvicorn's supervisor, its workers, a multiprocessing helper
