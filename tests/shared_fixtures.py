"""Session fixtures made once per test session and shared by the pytest-xdist workers.

Each worker used to make its own servers, tiny model, samples and trained style run: about 20 CPU-s per worker
(measured: the three servers 6-8 CPU-s, tiny model and samples about 6, the style run about 7), paid three times
on the two cores `make test` has. Now the first worker to need one takes a lock in the folder the workers share
(their base temporary folder's parent), makes it and writes a JSON descriptor (URLs, ports, keys, paths); the
others wait on the lock and attach to what the descriptor says. Nothing is pickled: a descriptor is plain data.
Measured (2026-12, 2 cores, three workers, the servers' own CPU counted): six modules that use them all, 133 ->
97 CPU-s; the quick loop (`-m "not slow"`), 381 -> 349 CPU-s and 3m28s -> 3m14s.

The servers made this way carry the controller's session mark (session_processes.py), not the worker's: workers
finish at different times, and the first to finish must not end a server the others still use. The controller's
`finish()` ends them once every worker is done; a killed session's are ended by the next session's `begin()`.

Without xdist there is nothing to share: `shared()` is not used and the fixtures make and tear down their own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from filelock import FileLock
from session_processes import SESSION

# The key under which the controller hands its session mark to each worker (config.workerinput).
CONTROLLER_MARK = "artlora_controller_session"


def under_xdist(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker (whose session fixtures may be shared)."""
    return hasattr(config, "workerinput")


def _root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the workers share: beside their own temporary folders."""
    root = tmp_path_factory.getbasetemp().parent / "shared"
    root.mkdir(parents=True, exist_ok=True)
    return root


def folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder of the shared fixture `name`."""
    path = _root(tmp_path_factory) / name
    path.mkdir(exist_ok=True)
    return path


def shared(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[], dict]) -> dict:
    """The descriptor of the shared fixture `name`: read if another worker made it, else made here by `make()`
    (under the lock, so that one worker makes it while the others wait) and written for the others. If `make`
    fails, nothing is written: the next worker tries again, and fails as visibly."""
    root = _root(tmp_path_factory)
    descriptor = root / f"{name}.json"
    with FileLock(root / f"{name}.lock"):
        if descriptor.exists():
            return json.loads(descriptor.read_text())
        made = make()
        partial = descriptor.with_suffix(".partial")
        partial.write_text(json.dumps(made))
        partial.replace(descriptor)
        return made


@contextmanager
def as_controller(config: pytest.Config) -> Iterator[None]:
    """Processes started in the block carry the controller's session mark: the controller ends them, after every
    worker is done."""
    with mock.patch.dict(os.environ, {SESSION: config.workerinput[CONTROLLER_MARK]}):
        yield


def made_once(
    config: pytest.Config, tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], Path]
) -> Path:
    """What `make(folder)` writes in a new folder and returns the path of: made by this process without xdist,
    else once for the session, by whichever worker needs it first."""
    if not under_xdist(config):
        return make(tmp_path_factory.mktemp(name))
    described = shared(tmp_path_factory, name, lambda: {"path": str(make(folder(tmp_path_factory, name)))})
    return Path(described["path"])
