"""Servers as processes of their own: start one in a session of its own with its output in a log file, wait
until it answers its health check, find all of its processes again later (from a pid file), stop or kill them,
and find free ports on loopback. services.py builds SeaweedFS and the MLflow server on this."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

import psutil

from artlora.errors import ArtloraError

LOOPBACK = "127.0.0.1"
SERVICE_TOKEN = "ARTLORA_SERVICE_TOKEN"


class ServiceError(ArtloraError):
    """A local server could not start; the message names it, and quotes its log when it has one."""


@dataclass
class Service:
    """A server started in a session of its own: where it answers, its process, and where its output goes.

    A handle can be made again from its fields alone (`artlora services` keeps them in pid files)."""

    name: str
    url: str
    pid: int
    create_time: float  # the process's start as psutil reports it: tells it from a later process with its pid
    token: str  # in the environment of the server and its children (SERVICE_TOKEN): tells them from others
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
        """Every live process of the server: itself, its workers, and workers whose parent died (a killed `mlflow
        server` leaves its uvicorn worker listening). They share its session and carry its token, so that after
        a reboot a new session that happens to have the old pid is not taken for it."""
        members = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):  # gone meanwhile, a zombie, or not this user's
                if os.getsid(process.pid) == self.pid and process.environ().get(SERVICE_TOKEN) == self.token:
                    members.append(process)
        return members

    def stop(self, timeout: float = 60) -> None:
        """Ask every process of the server to exit, wait up to `timeout` seconds, then kill what is left."""
        self._end(self.stop_signal, timeout)

    def kill(self) -> None:
        """End every process of the server at once, as a crash would (nothing is flushed)."""
        self._end(signal.SIGKILL, timeout=30)

    def _end(self, signum: int, timeout: float) -> None:
        end(self.members(), signum, timeout)


S = TypeVar("S", bound=Service)


def end(members: list[psutil.Process], signum: int, timeout: float) -> None:
    """Send `signum` to every process of `members`, wait up to `timeout` seconds, then kill what is left."""
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signum)
            member.resume()  # a suspended process (a fault test's SIGSTOP) acts on the signal only once resumed
    _, left = psutil.wait_procs(members, timeout=timeout)  # this also reaps those this process started
    for member in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(left, timeout=30)


def spawn(command: list[str], environment: Mapping[str, str], log_path: Path) -> tuple[dict, int]:
    """Start `command` in a session of its own with its output appended to `log_path`; what identifies its
    process (pid, create_time, token), and where in the log its output starts.

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
    token = secrets.token_hex(8)
    previous = os.umask(0o077)  # what the server writes (its data, MLflow's SQLite file) is its owner's alone
    try:
        pid = os.posix_spawn(
            command[0], command, {**environment, SERVICE_TOKEN: token}, file_actions=actions, setsid=True
        )
    finally:
        os.umask(previous)
    return {"pid": pid, "create_time": psutil.Process(pid).create_time(), "token": token}, log_start


@dataclass
class Starting(Generic[S]):
    """A server spawned and not yet waited for: `ready()` waits until it answers (after `before_ready`, what must
    be done once it runs but before it is used) and returns it. Two servers so spawned start side by side."""

    service: S
    timeout: float
    log_start: int
    before_ready: Callable[[], None] | None = None

    def ready(self) -> S:
        try:
            if self.before_ready is not None:
                self.before_ready()
        except BaseException:
            self.service.kill()
            raise
        wait_healthy(self.service, self.timeout, self.log_start)
        return self.service


def wait_healthy(service: Service, timeout: float, log_start: int) -> None:
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


GLOG_FATAL = re.compile(r"F\d{4} \d\d:\d\d:\d\d")


def _start_failed(service: Service, what: str, log_start: int, remedy: str) -> ServiceError:
    with service.log_path.open("rb") as log:
        log.seek(log_start)
        logged = log.read().decode(errors="replace").strip().splitlines()
    tail = logged[-15:]
    # weed's fatal line (glog's `F` level) may lie above the tail: its other parts go on logging while it exits.
    fatal = [line for line in logged[:-15] if GLOG_FATAL.match(line)]
    lines = [f"{service.name} {what}; the end of its log {service.log_path}:", *fatal, *tail, f"({remedy})"]
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


def check_free(service: str, ports: tuple[int, ...]) -> None:
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
