"""Processes a test session starts end with it, however it ends.

A session marks its environment (SESSION: its pid and start time) before any fixture runs, so every process it
starts carries the mark: the servers (SeaweedFS, `mlflow server`, PostgreSQL), CLI subprocesses and their workers.
Servers run in sessions of their own, so no signal to the test session reaches them; the mark finds them instead.

- SIGTERM (a timeout's) stops the session as Ctrl-C does: pytest tears the session fixtures down, which stop their
  servers.
- At the session's end, whatever still carries its mark is ended (a fixture cut off half-way through starting its
  server never got to stop it): SIGTERM, and SIGKILL after GRACE; SeaweedFS, whose data is thrown away, SIGKILL.
- A session that could not clean up (SIGKILL, a crash) leaves processes whose mark names a session that no longer
  runs: the next session ends those when it starts. Sessions that still run (another checkout's, side by side on
  this machine) are left alone.

Under pytest-xdist the controller and each worker are sessions of their own (each worker's processes end with it),
but the servers the workers share carry the controller's mark (shared_fixtures.py): they end with the controller,
after the last worker.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import tempfile
from pathlib import Path

import psutil

from artlora.errors import Stopped
from artlora.io import processes, services

SESSION = "ARTLORA_TEST_SESSION"
# A folder to delete once the process that carries it in its environment is ended (PostgreSQL's cluster, which
# lives outside pytest's temporary folders).
LEFTOVER = "ARTLORA_TEST_LEFTOVER"
GRACE = 10.0  # seconds between SIGTERM and SIGKILL


def mark(pid: int | None = None) -> str:
    """The mark of the session run by process `pid` (this one by default): its pid and start time, which tell it
    from a later process given the same pid."""
    process = psutil.Process(pid)
    return f"{process.pid}:{process.create_time():.2f}"


def begin(environment: dict) -> None:
    """Start this session: end the leftovers of dead sessions, mark `environment` (os.environ) and make SIGTERM
    stop the session in order."""
    end_processes(_carrying(lambda value: not _runs(value)))
    environment[SESSION] = mark()
    signal.signal(signal.SIGTERM, _stop)


def finish() -> None:
    """End whatever this session started and is still running."""
    end_processes(carrying(mark()))


def carrying(session: str) -> list[psutil.Process]:
    """The live processes marked with `session`."""
    return _carrying(lambda value: value == session)


def end_processes(found: list[psutil.Process]) -> None:
    leftovers = set()
    for process in found:
        with contextlib.suppress(psutil.Error):
            leftovers.add(process.environ().get(LEFTOVER, ""))
    # A test session's SeaweedFS holds only data thrown away with it (its fixture kills it too, as
    # services.throwaway_seaweedfs does): a SIGTERM would only wait out its filer's fixed 10 s graceful stop.
    stores = [process for process in found if _is_weed(process)]
    sockets = [path for process in stores for path in _weed_sockets(process)]
    processes.end(stores, signal.SIGKILL, GRACE)
    for path in sockets:
        path.unlink(missing_ok=True)
    processes.end([process for process in found if process not in stores], signal.SIGTERM, GRACE)
    for folder in filter(None, leftovers):
        path = Path(folder)
        if path.parent == Path(tempfile.gettempdir()) and path.name.startswith("artlora-"):  # never anything else
            shutil.rmtree(path, ignore_errors=True)


def _is_weed(process: psutil.Process) -> bool:
    try:
        return process.name() == "weed"
    except psutil.Error:
        return False


def _weed_sockets(process: psutil.Process) -> list[Path]:
    """The local sockets weed leaves in /tmp, named by its parts' ports: what services.SeaweedFS removes after a
    store it ends itself (the servers the xdist workers share are ended here)."""
    with contextlib.suppress(psutil.Error):
        ports = [int(arg.rpartition("=")[2]) for arg in process.cmdline() if re.fullmatch(r"-\w+\.port=\d+", arg)]
        ports += [port + services.WEED_GRPC_OFFSET for port in ports]
        return [path for port in ports for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
    return []


def _carrying(wanted) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):  # gone meanwhile, a zombie, or not this user's
            value = process.environ().get(SESSION)
            if value and process.pid != psutil.Process().pid and wanted(value):
                found.append(process)
    return found


def _runs(session: str) -> bool:
    """Whether the session that made this mark still runs."""
    pid, _, _ = session.partition(":")
    try:
        return mark(int(pid)) == session and psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def _stop(signum: int, frame: object) -> None:
    """SIGTERM: stop as Ctrl-C does (pytest then tears the fixtures down); a second one while that runs waits."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped(signum)
