"""Start what the manifests run, here on loopback: a process started with a built container's own command and
arguments, waited for on an HTTP health path (PostgreSQL is the session's, conftest's `postgres`), and a built
Secret's files laid out where the container mounts them."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


def mount_secret(documents: list[dict], workload: str, secret: str, root: Path) -> str:
    """Write the built Secret's keys as files into `root` + the path where the workload's container mounts it (as
    the kubelet would), each file naming that path rewritten to the one here; the mount path."""
    kind, name = workload.split("/")
    (found,) = [doc for doc in documents if (doc["kind"], doc["metadata"]["name"]) == (kind, name)]
    pod, namespace = found["spec"]["template"]["spec"], found["metadata"]["namespace"]
    (volume,) = [v["name"] for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret]
    (mount,) = [m for (only,) in [pod["containers"]] for m in only["volumeMounts"] if m["name"] == volume]
    assert mount.get("readOnly") is True, mount
    (data,) = [
        doc["data"]
        for doc in documents
        if (doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace")) == ("Secret", secret, namespace)
    ]
    path = mount["mountPath"]
    folder = root / path.lstrip("/")
    folder.mkdir(parents=True)
    for key, value in data.items():
        (folder / key).write_bytes(base64.b64decode(value).replace(f'"{path}/'.encode(), f'"{folder}/'.encode()))
    return path
