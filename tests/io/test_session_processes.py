"""A test session's servers end with it however it ends: a pytest session in a subprocess starts SeaweedFS,
PostgreSQL and `mlflow server` through the real fixtures, and is stopped from outside. Under pytest-xdist its
workers share one set, which the controller ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import session_processes

TESTS = Path(__file__).resolve().parents[1]
HOLDS_THE_SERVERS = """
import os, pathlib, time

def test_holds_the_servers(mlflow_server):
    pathlib.Path(os.environ["READY_FILE"]).write_text("ready")
    time.sleep(600)
"""
# Under xdist, each worker's test says which MLflow server it was given.
HOLDS_THE_SHARED_SERVERS = """
import os, pathlib, time

def test_holds_the_servers(mlflow_server):
    pathlib.Path(os.environ["READY_FILE"] + "-" + os.environ["PYTEST_XDIST_WORKER"]).write_text(mlflow_server.url)
    time.sleep(600)
"""

pytestmark = pytest.mark.slow  # each inner session starts the three servers (about a minute)


def start_session(folder: Path, test: str, *options: str, files: int = 1) -> subprocess.Popen:
    """`pytest` on `files` copies of one test file in `folder`, with the suite's conftest as a plugin (its
    fixtures and hooks)."""
    folder.mkdir()
    tests = [folder / f"test_inner_{number}.py" for number in range(files)]
    for path in tests:
        path.write_text(test)
    source = TESTS.parent / "src"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(source)])}
    environment["READY_FILE"] = str(folder / "ready")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider"]
    command += [f"--basetemp={folder / 'tmp'}", *options, *map(str, tests)]
    log = (folder / "session.log").open("w")
    return subprocess.Popen(command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT)


def servers_of(
    session: subprocess.Popen, folder: Path, ready: tuple[str, ...] = ("ready",), timeout: float = 300
) -> list[psutil.Process]:
    """Once its tests run (each has written its file of `ready`), the processes the session started, by its mark;
    at least the three servers."""
    deadline = time.monotonic() + timeout
    while not all((folder / name).exists() for name in ready):
        assert session.poll() is None, (folder / "session.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the inner session's servers did not start"
        time.sleep(0.5)
    found = session_processes.carrying(session_processes.mark(session.pid))
    names = " ".join(" ".join(process.cmdline()) for process in found)
    assert "weed" in names and "mlflow" in names and "postgres" in names, names
    return found


def alive(found: list[psutil.Process]) -> list[str]:
    return [" ".join(p.cmdline()) for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_sigterm_ends_the_session_and_every_server_it_started(tmp_path):
    folder = tmp_path / "inner"
    session = start_session(folder, HOLDS_THE_SERVERS)
    found = servers_of(session, folder)

    session.send_signal(signal.SIGTERM)
    assert session.wait(timeout=120) != 0
    assert alive(found) == []
    assert "Stopped" in (folder / "session.log").read_text() or "SIGTERM" in (folder / "session.log").read_text()


def test_after_a_sigkill_the_next_session_ends_what_the_killed_one_left(tmp_path):
    folder = tmp_path / "inner"
    session = start_session(folder, HOLDS_THE_SERVERS)
    found = servers_of(session, folder)
    postgres_folders = {p.environ().get(session_processes.LEFTOVER) for p in found} - {None}

    session.kill()
    session.wait(timeout=30)
    assert alive(found), "a killed session's servers outlive it (what the next session's start must end)"

    following = start_session(tmp_path / "next", "def test_nothing():\n    pass\n")
    assert following.wait(timeout=120) == 0, (tmp_path / "next" / "session.log").read_text()[-3000:]
    assert alive(found) == []
    assert postgres_folders and not any(Path(path).exists() for path in postgres_folders)


def test_under_xdist_the_workers_share_one_set_of_servers_which_the_controller_ends(tmp_path):
    folder = tmp_path / "inner"
    session = start_session(folder, HOLDS_THE_SHARED_SERVERS, "-n", "2", "--dist", "loadfile", files=2)
    ready = ("ready-gw0", "ready-gw1")
    # Found by the controller's mark: a server a worker had marked as its own would end with that worker.
    found = servers_of(session, folder, ready)
    assert len({(folder / name).read_text() for name in ready}) == 1, "each worker was given a server of its own"
    assert len([process for process in found if process.name() == "weed"]) == 1

    session.send_signal(signal.SIGTERM)
    assert session.wait(timeout=120) != 0
    assert alive(found) == []
