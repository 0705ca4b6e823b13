"""The run folder's lease against the session's SeaweedFS: one holder at a time across processes, a live holder
keeps it past its duration (heartbeat), a killed one loses it at once on its own host and at its expiry from
elsewhere, a holder that lost it is told so."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import pytest

from artlora.io import storage
from artlora.io.lease import Lease, LeaseLostError, LeaseWaitError

SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter each, as two runs are


def take_turns(barrier, uri: str, turns: int, hold: float) -> list[tuple[float, float]]:
    """In a process of its own: take the lease `turns` times, holding it `hold` s; the intervals it held it."""
    store = storage.get_storage()
    barrier.wait(timeout=120)
    held = []
    for _ in range(turns):
        with Lease(store, uri, duration=5, wait=60, poll=0.01):
            start = time.time()
            time.sleep(hold)
            held.append((start, time.time()))
    return held


def test_two_processes_never_hold_the_lease_at_once(bucket):
    uri = storage.join(bucket, "runs", "same", "_LEASE")
    with SPAWN.Manager() as manager, SPAWN.Pool(2) as pool:
        barrier = manager.Barrier(2)
        results = [pool.apply_async(take_turns, (barrier, uri, 5, 0.2)) for _ in range(2)]
        intervals = sorted(interval for result in results for interval in result.get(timeout=300))

    assert len(intervals) == 10
    overlaps = [(a, b) for a, b in zip(intervals, intervals[1:], strict=False) if b[0] < a[1]]
    assert not overlaps, overlaps
    assert not storage.get_storage().exists(uri), "the last holder released it"


def hold_forever(uri: str, duration: float, ready) -> None:
    """In a process of its own: take the lease and keep renewing it until killed."""
    Lease(storage.get_storage(), uri, duration=duration, wait=0).acquire()
    ready.set()
    time.sleep(3600)


def running_holder(uri: str, duration: float):
    """A process of its own holding the lease at `uri`, renewing it."""
    ready = SPAWN.Event()
    holder = SPAWN.Process(target=hold_forever, args=(uri, duration, ready))
    holder.start()
    assert ready.wait(timeout=120), "the holder never took the lease"
    return holder


def test_a_live_holder_keeps_the_lease_past_its_duration(store, bucket):
    uri = storage.join(bucket, "_LEASE")
    holder = running_holder(uri, 1.5)
    try:
        # Alive, it renews: a run waiting twice its duration still finds it held, and ends in one line.
        with pytest.raises(LeaseWaitError, match=r"is still held by .* pid \d+ .* after waiting 3 s") as waited:
            Lease(store, uri, wait=3, poll=0.1).acquire()
        assert str(holder.pid) in str(waited.value) and "\n" not in str(waited.value)
    finally:
        holder.kill()


def test_a_holder_killed_on_this_host_frees_the_lease_at_once(store, bucket):
    uri = storage.join(bucket, "_LEASE")
    holder = running_holder(uri, 60)
    os.kill(holder.pid, signal.SIGKILL)  # no heartbeat, no release
    holder.join(timeout=30)
    killed = time.time()

    with Lease(store, uri, wait=30, poll=0.05):
        taken = time.time()
    assert taken - killed < 10, "taken over long before its 60 s expiry: its process has ended"


def test_a_holder_elsewhere_that_stopped_renewing_loses_the_lease_at_its_expiry(store, bucket):
    uri = storage.join(bucket, "_LEASE")
    # A record as a process on another host writes it, whose host then went away.
    expires = time.time() + 1.5
    record = {"owner": "node-7 pid 42 (0badf00d)", "expires": expires, "token": "t", "place": "node-7", "pid": 42}
    store.put_bytes(uri, json.dumps(record).encode())

    with Lease(store, uri, wait=30, poll=0.05):
        taken = time.time()
    assert expires <= taken < expires + 2, "taken over once its expiry passed, and soon after"


def test_a_holder_whose_lease_was_taken_over_is_told_and_leaves_the_new_one(store, bucket):
    uri = storage.join(bucket, "_LEASE")
    lease = Lease(store, uri, duration=0.6)
    lease.acquire()
    lease.check()
    # Another run takes it over (as it would after a heartbeat stalled past the expiry).
    store.put_bytes(uri, b'{"owner": "someone else", "expires": 0, "token": "x"}')
    time.sleep(0.5)  # the heartbeat tries to renew at 0.2 s and finds the object changed
    with pytest.raises(LeaseLostError, match="another run took it over"):
        lease.check()
    lease.release()
    assert json.loads(store.get_bytes(uri))["owner"] == "someone else", "release deletes only its own lease"


def test_a_write_whose_answer_was_lost_is_recognised_as_ours(store, bucket, monkeypatch):
    """The client retries a PUT whose answer it lost; the retry is refused (the object is there: ours)."""
    uri = storage.join(bucket, "_LEASE")
    put_new = store.put_new

    def answer_lost(target: str, data: bytes) -> None:
        put_new(target, data)
        return None  # what the refused retry reports

    monkeypatch.setattr(store, "put_new", answer_lost)
    lease = Lease(store, uri, duration=30, wait=2, poll=0.1)  # else it would wait for itself
    lease.acquire()
    lease.check()
    assert json.loads(store.get_bytes(uri))["owner"] == lease.owner
    lease.release()
    assert not store.exists(uri)
