"""kfp.local as a user reads it: its warnings about settings that only a cluster uses as one line, and a task
killed by a signal named as killed, by which signal.

kfp.local warns, for every task of every run, that the task's image is not Python's and that its CPU and memory
limits are ignored: true of every artlora run here, so it is said once. It reports a task killed by a signal (the
kernel's out-of-memory killer, a `kill -9`) as a plain failure: the task's return code, which holds the signal,
is read where kfp.local's subprocess runner waits for it.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import warnings
from collections.abc import Iterator

# (message pattern, category) of kfp.local's warnings about what only a cluster uses (kfp 2.17).
LOCAL_ONLY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"Task '[^']*': settings \[.*\] have no effect in the current local runner", UserWarning),
    (r"'\.\w+\(\)' is not used by the current local runner", UserWarning),
    (r"You may be attem\w* to run a task that uses custom or non-Python base image", RuntimeWarning),
)
ONE_LINE = (
    "kfp.local: each task runs as a subprocess of this Python; the task image and the cluster settings "
    "(CPU, memory, GPUs, deadlines) are not used here"
)


class TaskKilled(RuntimeError):
    """A task of the local run was killed by a signal; the message names the task and the signal."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK = re.compile(r"(?:Task|Inner task failed:) '([^']+)'")


@contextlib.contextmanager
def quiet_local_only_warnings() -> Iterator[None]:
    """kfp.local's warnings about cluster-only settings ignored, said once on stderr; every other warning
    shows as before."""
    print(ONE_LINE, file=sys.stderr)
    with warnings.catch_warnings():
        for pattern, category in LOCAL_ONLY_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=category)
        yield


@contextlib.contextmanager
def task_signals() -> Iterator[list[int]]:
    """The signals that killed tasks run meanwhile, in order: kfp.local's subprocess runner, wrapped to keep the
    return code it turns into a bare failure."""
    from kfp.local import subprocess_task_handler as handler

    signals: list[int] = []
    original = handler.run_local_subprocess

    def run_and_keep(*args: object, **kwargs: object) -> int:
        code = original(*args, **kwargs)
        if killed_by := signal_of(code):
            signals.append(killed_by)
        return code

    handler.run_local_subprocess = run_and_keep
    try:
        yield signals
    finally:
        handler.run_local_subprocess = original


def failure(error: str, signals: list[int]) -> RuntimeError:
    """kfp.local's report of a failed task as the error to raise, without its colours; TaskKilled, naming the task
    and the signal, when a signal killed it (SIGKILL is most often the kernel's out-of-memory killer)."""
    plain = _ANSI.sub("", error)
    if not signals:
        return RuntimeError(plain)
    named = _TASK.search(plain)
    task = f"task '{named.group(1)}'" if named else "a task"
    return TaskKilled(f"{task} was killed by {signal_name(signals[-1])}")


def signal_of(code: int) -> int:
    """The signal that ended a task with this return code, or 0. A task is a `sh -c` script that runs Python as
    its child, and a shell exits with 128 + n when its child was killed by signal n; a process killed itself has
    the code -n."""
    number = -code if code < 0 else code - 128 if code > 128 else 0
    return number if number in set(signal.Signals) else 0


def signal_name(number: int) -> str:
    """SIGKILL for 9; the number itself for a signal Python does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
