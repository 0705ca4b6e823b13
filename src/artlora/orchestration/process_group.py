"""Run a command as a process group of its own, and end the whole group when this process is told to stop.

kfp.local runs each task as a subprocess of its orchestrator and retries a task that failed: a Ctrl-C that killed
the train task made kfp.local start it again while `artlora pipeline run` went on waiting. So the orchestrator
runs in a group of its own, and SIGINT or SIGTERM to this process ends every process of that group (the
orchestrator, its tasks and their workers) together: SIGTERM first, SIGKILL after a grace period for what is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from artlora.errors import Stopped

GRACE = 10.0  # seconds between SIGTERM and SIGKILL
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run(command: list[str]) -> int:
    """Run `command` to its end and return its exit code; Stopped if this process was told to stop meanwhile,
    once every process of the command's group has ended."""
    child = subprocess.Popen(command, start_new_session=True)
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            _signal_group(child.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        code = _wait(child, received)
    finally:
        # Whatever is left of the group (a worker that outlived its task) goes with it, stopped or not.
        _signal_group(child.pid, signal.SIGKILL)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Stopped(received[0])
    return code


def _wait(child: subprocess.Popen, received: list[int]) -> int:
    """The child's exit code; SIGKILL for its group when it outlives the grace period after a stop signal."""
    stopping_since = None
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return child.wait(timeout=0.5)
        if received and stopping_since is None:
            stopping_since = time.monotonic()
        if stopping_since is not None and time.monotonic() - stopping_since > GRACE:
            _signal_group(child.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
