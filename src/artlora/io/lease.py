"""A lease in the object store: one holder at a time for a prefix that two identical runs would both write.

Two runs of the same config resolve to the same run folder (its key hashes the config), so both would resume from
the same checkpoint and write the same checkpoints and adapter at once. Around those writes each run holds the
folder's lease; the other waits, saying who holds it and until when, and then finds the work done (or resumes
from where the holder stopped).

The lease is one object holding its holder and expiry time. It is taken with a write only if absent, renewed and
taken over with a write only if it is still the version read, and released with a delete only if it is still
ours: the store decides every race (`storage.put_new`, `replace`, `delete_if`), so two processes never both take
it. While held, a heartbeat thread renews it every third of its duration; a holder that dies (SIGKILL, a lost
node) stops renewing, and once its expiry passes the next run takes the lease over. A run on the holder's own host
sees at once that the holder's process has ended, so a local rerun after kill -9 does not wait out the expiry.
Expiry times are compared across hosts, so the hosts sharing a store are assumed to keep their clocks within
seconds of each other (NTP).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import TracebackType

import psutil

from artlora.errors import ArtloraError
from artlora.io import storage

log = logging.getLogger(__name__)

DURATION_S = 60.0  # a crashed holder blocks the next run this long at most
WAIT_S = 24 * 3600.0  # as long as a train task may run on the cluster by default (config/cluster.py)
POLL_S = 2.0


class LeaseWaitError(ArtloraError):
    """Another run held the lease for longer than this run would wait."""


class LeaseLostError(ArtloraError):
    """The holder could not renew its lease before it expired, and another run may have taken it."""


@dataclass(frozen=True)
class Holder:
    owner: str  # host, process id and a random part: who holds it, unique per lease object
    expires: float  # Unix time
    token: str  # new on every write, so a write whose answer was lost (and retried) is recognised as ours
    place: str = ""  # where `pid` names the holder's process (`process_place`); empty in older records
    pid: int = 0
    started: float = 0.0  # the process's start time, so that a reused pid is not taken for the holder

    def describe(self) -> str:
        until = datetime.fromtimestamp(self.expires, UTC).strftime("%H:%M:%S UTC")
        return f"{self.owner} (until {until} unless renewed)"

    def ended_here(self) -> bool:
        """Whether the holder was a process where this one runs that has ended (killed, out of memory): its lease
        is then taken over at once, not after its expiry. Anything not known to have ended counts as alive."""
        if not self.pid or self.place != process_place():
            return False
        try:
            process = psutil.Process(self.pid)
            return process.status() == psutil.STATUS_ZOMBIE or abs(process.create_time() - self.started) > 1.0
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:  # another user's process: alive
            return False


def process_place() -> str:
    """Where a process id names one process: this host and, on Linux, its pid namespace (containers sharing the
    host's name, as with host networking, number their processes apart)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()} {namespace}".strip()


class Lease:
    """`with Lease(store, uri):` holds the lease at `uri` for the block, renewing it in the background."""

    def __init__(
        self,
        store: storage.Storage,
        uri: str,
        duration: float | None = None,  # seconds a holder keeps it without renewing (DURATION_S)
        wait: float | None = None,  # seconds to wait for another holder before giving up (WAIT_S)
        poll: float | None = None,  # seconds between looks while waiting (POLL_S)
    ):
        self.store, self.uri = store, uri
        # The module's values as they are now, not when this was defined: tests shorten them.
        self.duration = DURATION_S if duration is None else duration
        self.wait = WAIT_S if wait is None else wait
        self.poll = POLL_S if poll is None else poll
        self.owner = f"{socket.gethostname()} pid {os.getpid()} ({uuid.uuid4().hex[:8]})"
        self._etag: str | None = None  # the version of the lease object we wrote last
        self._expires = 0.0
        self._lost: str | None = None  # why the heartbeat gave the lease up
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- taking and giving back ---------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lease, waiting while another live holder has it; LeaseWaitError after `wait` seconds."""
        deadline, announced = time.monotonic() + self.wait, None
        while True:
            current = self.store.get_versioned(self.uri)
            if current is None:
                written = self._write(over=None)
            else:
                holder, etag = _holder(current[0]), current[1]
                if holder is not None and holder.expires > time.time() and not holder.ended_here():
                    if holder.owner != announced:
                        log.info("%s is held by %s; waiting for it", self.uri, holder.describe())
                        announced = holder.owner
                    if time.monotonic() + self.poll > deadline:
                        raise LeaseWaitError(
                            f"{self.uri} is still held by {holder.describe()} after waiting {self.wait:.0f} s "
                            "(an identical run is writing there: let it finish, or stop it, then run again)"
                        )
                    time.sleep(self.poll)
                    continue
                if holder is not None:
                    why = "has ended" if holder.ended_here() else "stopped renewing it"
                    log.warning("taking over %s: its holder %s %s", self.uri, holder.describe(), why)
                written = self._write(over=etag)
            if written:
                break  # else another run took it between our read and our write: look again
        self._heartbeat = threading.Thread(target=self._renew_until_stopped, name="lease-heartbeat", daemon=True)
        self._heartbeat.start()

    def release(self) -> None:
        """Stop renewing and delete the lease object, if it is still ours."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self._etag is not None and self._lost is None:
            self.store.delete_if(self.uri, self._etag)
        self._etag = None

    def check(self) -> None:
        """Raise LeaseLostError unless the lease is still ours: call it before each write it guards."""
        if self._lost is None and time.time() >= self._expires:
            self._lost = f"it expired at {datetime.fromtimestamp(self._expires, UTC):%H:%M:%S} UTC before renewal"
        if self._lost is not None:
            raise LeaseLostError(
                f"lost the lease on {self.uri}: {self._lost} (another run may be writing there now: check the "
                "object store's health, then run again to resume from the newest checkpoint)"
            )

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None):
        self.release()

    # -- internals ----------------------------------------------------------------------------------------

    def _write(self, over: str | None) -> bool:
        """A fresh lease record written only where no object is (`over` None) or only over the version `over`;
        True if the lease is ours now. A refused write whose object carries our token is ours too: its first
        answer was lost and the client's retry was refused."""
        me = psutil.Process()
        expires, token = time.time() + self.duration, uuid.uuid4().hex
        holder = Holder(self.owner, expires, token, process_place(), me.pid, me.create_time())
        data = json.dumps(asdict(holder)).encode()
        etag = self.store.put_new(self.uri, data) if over is None else self.store.replace(self.uri, data, over)
        if etag is None:
            current = self.store.get_versioned(self.uri)
            if current is None or _holder(current[0]) != holder:
                return False
            etag = current[1]
        self._etag, self._expires = etag, holder.expires
        return True

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.duration / 3):
            etag = self._etag
            assert etag is not None  # set by acquire before the heartbeat starts
            try:
                renewed = self._write(over=etag)
            except storage.StorageError as err:  # the store did not answer: try again until the lease expires
                log.warning("could not renew %s: %s", self.uri, err)
                continue
            if not renewed:
                self._lost = "another run took it over"
                log.error("lost %s: %s", self.uri, self._lost)
                return


def _holder(data: bytes) -> Holder | None:
    """The record in a lease object; None for anything else (which any run may replace)."""
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None
