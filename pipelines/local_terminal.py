"""kfp.local as a user reads it: its warnings about settings that only a cluster uses as one line, a task killed
by a signal named as killed, by which signal, and a task that failed with an error of artlora's own (the user's to
fix) reported by that error's one line instead of kfp's "Inner task failed: '<task>'".

kfp.local warns, for every task of every run, that the task's image is not Python's and that its CPU and memory
limits are ignored: true of every artlora run here, so it is said once. It reports a task killed by a signal (the
kernel's out-of-memory killer, a `kill -9`) as a plain failure: the task's return code, which holds the signal,
is read where kfp.local's subprocess runner waits for it. A failed task's error is the last line of the traceback
the task printed, `artlora.<module>.<Class>: <message>`, when that class is an ArtloraError: the runner prints the
task's output line by line, and those lines are kept while it runs.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import re
import signal
import sys
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from artlora.errors import ArtloraError

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


class TaskError(RuntimeError):
    """A task of the local run failed with an error of artlora's own: the message is that error's."""


@dataclass
class TaskReports:
    """What kfp.local's report of a failed run leaves out, gathered while its tasks run, in order."""

    signals: list[int] = field(default_factory=list)  # the signals that killed tasks
    errors: list[str] = field(default_factory=list)  # the one-line errors of artlora's own that tasks failed with


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK = re.compile(r"(?:Task|Inner task failed:) '([^']+)'")
# The last line of a Python traceback raised by one of artlora's own classes: `artlora.<module>.<Class>: <message>`.
_RAISED = re.compile(r"^\s*(?P<cls>artlora(?:\.\w+)+): (?P<message>.+?)\s*$")
TAIL_LINES = 200  # of a task's output, searched for its error: a traceback ends with it, seldom this long


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
def task_reports() -> Iterator[TaskReports]:
    """What the tasks run meanwhile failed with: kfp.local's subprocess runner, wrapped to keep the return code it
    turns into a bare failure, and the end of the output it prints."""
    from kfp.local import subprocess_task_handler as handler

    reports = TaskReports()
    original = handler.run_local_subprocess

    def run_and_keep(*args: object, **kwargs: object) -> int:
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        with _printed_into(tail):
            code = original(*args, **kwargs)
        if killed_by := signal_of(code):
            reports.signals.append(killed_by)
        elif code and (own := own_error(tail)):
            reports.errors.append(own)
        return code

    handler.run_local_subprocess = run_and_keep
    try:
        yield reports
    finally:
        handler.run_local_subprocess = original


@contextlib.contextmanager
def _printed_into(lines: deque[str]) -> Iterator[None]:
    """Every print meanwhile also kept in `lines`: kfp.local's runner prints each line of a task's output (through
    its own indenting print, which this wraps), and offers no other way to read it."""
    printing = builtins.print

    def print_and_keep(*args: object, **kwargs: object) -> None:
        lines.append(" ".join(str(arg) for arg in args))
        printing(*args, **kwargs)  # type: ignore[call-overload]

    builtins.print = print_and_keep
    try:
        yield
    finally:
        builtins.print = printing


def own_error(output: Iterable[str]) -> str:
    """The message of the error of artlora's own (an ArtloraError) a task failed with: the last line of its output,
    which ends with the traceback. Empty when it failed otherwise, also when an ArtloraError led to another error
    (a bug: its traceback is the report)."""
    last = next((line for line in reversed(list(output)) if line.strip()), "")
    raised = _RAISED.match(_ANSI.sub("", last))
    return raised["message"] if raised and _is_artlora_error(raised["cls"]) else ""


def _is_artlora_error(dotted: str) -> bool:
    module, _, name = dotted.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return isinstance(found, type) and issubclass(found, ArtloraError)


def failure(error: str, reports: TaskReports) -> RuntimeError:
    """kfp.local's report of a failed task as the error to raise, without its colours; TaskKilled, naming the task
    and the signal, when a signal killed it (SIGKILL is most often the kernel's out-of-memory killer); TaskError,
    the task's own one line, when it failed with an error of artlora's own."""
    plain = _ANSI.sub("", error)
    if reports.signals:
        named = _TASK.search(plain)
        task = f"task '{named.group(1)}'" if named else "a task"
        return TaskKilled(f"{task} was killed by {signal_name(reports.signals[-1])}")
    if reports.errors:
        return TaskError(reports.errors[-1])
    return RuntimeError(plain)


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
