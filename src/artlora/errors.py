"""The errors a user or the environment can cause, as opposed to bugs.

Each message names the input (file, field, URI, host) and says what to do; the CLI prints it as one line,
`artlora <command>: error: <message>`, and exits with code 2. Each layer raises its own kind (ConfigError,
StorageError, ModelLoadError, TrackingError, ...), all of them an ArtloraError. Anything else that escapes a
command is a bug, and the CLI shows its traceback.
"""

import contextlib
import errno
import signal
from collections.abc import Iterator
from pathlib import Path


class ArtloraError(Exception):
    """A problem with the input or the environment, phrased for the user: what is wrong, and what to do."""


class Stopped(KeyboardInterrupt):
    """This process was told to stop (Ctrl-C's SIGINT, or SIGTERM from a scheduler or `kill`); the CLI exits with
    128 + the signal's number, after the blocks that were running have cleaned up."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class EnvironmentFault(ArtloraError):
    """The machine refused a file operation for a reason of its own: a full disk, a read-only file system, no
    permission. Never a bug: the same command succeeds once the machine allows it."""


# What each such refusal asks of the user.
_ENVIRONMENT_ADVICE = {
    errno.ENOSPC: "free some space there, or point ARTLORA_WORK_DIR or the output elsewhere, then run again",
    errno.EDQUOT: "your disk quota is used up: free some of it, then run again",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "you may not use this path: choose another or change its permissions",
    errno.EPERM: "you may not use this path: choose another or change its permissions",
}


def environment_fault(err: OSError) -> EnvironmentFault | None:
    """The OSError as an EnvironmentFault naming the path and what to do, when the machine caused it; else None
    (a missing file or a bad path that artlora itself chose is a bug, and keeps its traceback)."""
    advice = _ENVIRONMENT_ADVICE.get(err.errno or 0)
    if advice is None:
        return None
    where = f": {err.filename}" if err.filename else ""
    return EnvironmentFault(f"{err.strerror or type(err).__name__}{where} ({advice})")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """An OSError while writing `path` that does not say where (a full disk fails a write or a close with no file
    name) names `path`, so that its one line says which disk to free."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise
