"""Start what the manifests run, here on loopback: a password-protected PostgreSQL, and a process started with
a built container's own command and arguments, waited for on an HTTP health path."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port(also_free_above: int = 0) -> int:
    """A free port on loopback; with also_free_above, one whose port + that offset is free too (weed's gRPC)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not also_free_above:
            return port
        if port + also_free_above < 65536:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port + also_free_above)) != 0:
                    return port


@contextmanager
def postgres(user: str, database: str, password: str) -> Iterator[int]:
    """A throw-away PostgreSQL cluster on loopback that requires `password` (scram-sha-256); yields its port."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert binaries, "PostgreSQL server binaries not found: apt-get install postgresql (see .ci/run)"
    bin_dir = Path(binaries[-1]).parent
    # initdb refuses to run as root, so the cluster belongs to the postgres user then; it lives outside pytest's
    # temporary folders, which only their owner may enter.
    root = Path(tempfile.mkdtemp(prefix="artlora-deploy-pg-"))
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    (root / "password").write_text(password)
    if as_owner:
        shutil.chown(root, "postgres")
        shutil.chown(root / "password", "postgres")
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_owner, *args], check=True, capture_output=True)

    run(f"{bin_dir}/initdb", "-D", f"{root}/data", "-U", user, "--auth=scram-sha-256", f"--pwfile={root}/password")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    run(f"{bin_dir}/pg_ctl", "-D", f"{root}/data", "-o", options, "-l", f"{root}/log", "-w", "start")
    try:
        env = {**os.environ, "PGPASSWORD": password}
        subprocess.run(
            [f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", user, database],
            check=True,
            capture_output=True,
            env=env,
        )
        yield port
    finally:
        run(f"{bin_dir}/pg_ctl", "-D", f"{root}/data", "-m", "fast", "stop")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def process(
    command: list[str], env: dict[str, str], health_url: str, log: Path, timeout: float
) -> Iterator[subprocess.Popen]:
    """Run command until the block ends; first wait until health_url answers 200. Its output goes to log (a
    file, not a pipe: an undrained pipe would block a chatty server)."""
    with log.open("wb") as out:
        # A session of its own, so that the whole process group (mlflow's uvicorn workers too) can be ended at once.
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(health_url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, f"{command[0]} not healthy within {timeout} s"
                time.sleep(0.5)
        yield server
    finally:
        # The data is thrown away, so no graceful shutdown is waited for (weed takes about 30 s to flush).
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
