"""Run code as another local user (`nobody`, with no keys): `setpriv` drops to it, which needs root; the tests
that need it are skipped where this session cannot switch users."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

PROBE = Path(__file__).with_name("stranger_probe.py")
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def can_switch_user() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


needs_another_user = pytest.mark.skipif(not can_switch_user(), reason="setpriv to nobody needs root")


def run_as_nobody(command: list[str], stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    """`command` as nobody, in / (no folder of ours as its working folder), with no environment of ours."""
    environment = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run(
        [*AS_NOBODY, *command], input=stdin, capture_output=True, text=True, env=environment, cwd="/", timeout=timeout
    )


def probe(ports: list[int], requests: list[tuple[str, str, str | None]], unix_sockets: Sequence[str] = ()) -> dict:
    """What nobody gets from each port: (method, path, body) requests, a TLS handshake, Unix sockets
    (stranger_probe.py)."""
    request = {"ports": ports, "http": requests, "unix_sockets": list(unix_sockets)}
    done = run_as_nobody([sys.executable, "-I", str(PROBE)], json.dumps(request))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def listening(pid: int) -> set[tuple[str, int]]:
    """Every (address, port) the process and its children listen on."""
    process = psutil.Process(pid)
    members = [process, *process.children(recursive=True)]
    return {
        (connection.laddr.ip, connection.laddr.port)
        for member in members
        for connection in member.net_connections("inet")
        if connection.status == psutil.CONN_LISTEN
    }


def unix_sockets(pid: int) -> list[str]:
    """The paths of the Unix sockets the process and its children listen on."""
    process = psutil.Process(pid)
    members = [process, *process.children(recursive=True)]
    return sorted({c.laddr for member in members for c in member.net_connections("unix") if c.laddr})
