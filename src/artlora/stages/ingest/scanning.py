"""The scan: every image file read, hashed and, unless the index already knows its bytes, decoded and measured.

Files stream through a pool of worker processes with a bounded number in flight, so memory holds a few files
at a time however many there are; results come back as small records (no pixels). Each worker reads its file
itself (local path or s3:// URI), hashes it, and for bytes not in the index decodes and measures them and stores
the original bytes of every decodable image in the content-addressed blob store (`<blob prefix>/<sha256>.<ext>`),
so a curation setting that changes later never needs the source read again.

Processes, not threads: measured on 2 cores, both ran the decode-and-measure work about 1.9x faster than one,
so Pillow and numpy release the GIL for most of it; but the rest (a few percent, by that measurement) would cap
threads near 9x on 16 cores, where processes keep scaling. Workers start by forkserver (or spawn), never fork:
the calling process has threads (the MLflow client's, for one).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from tqdm import tqdm

from artlora.data import images
from artlora.errors import ArtloraError
from artlora.io import storage
from artlora.stages.ingest import inspection, sources
from artlora.stages.ingest.inspection import Outcome

# Jobs queued per worker: enough to keep each busy while results are collected, few enough to bound memory.
IN_FLIGHT_PER_WORKER = 4
BLOB_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "DIB": ".bmp"}
BLOB_SUFFIX |= {"TIFF": ".tif", "GIF": ".gif"}


class WorkerDied(ArtloraError):
    """An ingest worker process died (out of memory, or a script that runs ingest when imported)."""


@dataclass(frozen=True)
class ScanSettings:
    background: images.RGB
    max_pixels: int
    blobs: str  # s3:// prefix of the blob store
    reusable: frozenset[str]  # hashes whose outcome the index already holds


@dataclass(frozen=True)
class Scanned:
    name: str
    sha256: str  # "" when the file could not be read
    size: int  # bytes
    outcome: Outcome | None  # None: the index holds it (the file was not decoded)


def blob_uri(blobs: str, sha256: str, image_format: str) -> str:
    """Where a decodable image's original bytes are stored: named by content, suffixed by actual format."""
    return storage.join(blobs, f"{sha256}{BLOB_SUFFIX.get(image_format, '.bin')}")


def scan(files: list[sources.SourceFile], settings: ScanSettings, workers: int) -> Iterator[Scanned]:
    """Scan every file, in completion order, with a progress bar in images/s."""
    jobs = [(file.name, file.uri) for file in files]
    results = _inline(jobs, settings) if workers == 1 else _pooled(jobs, settings, workers)
    decoded = 0
    with tqdm(total=len(jobs), desc="ingest", unit="img", mininterval=1.0) as bar:
        for result in results:
            decoded += result.outcome is not None
            bar.set_postfix(decoded=decoded, refresh=False)
            bar.update()
            yield result


def scan_one(name: str, uri: str, settings: ScanSettings) -> Scanned:
    try:
        data = sources.read_uri(uri)
    except (OSError, storage.MissingObjectError) as err:  # a vanished or unreadable file; a dead endpoint raises
        return Scanned(name, "", 0, inspection.failure("unreadable", f"could not read the file: {err}"))
    sha = hashlib.sha256(data).hexdigest()
    if sha in settings.reusable:
        return Scanned(name, sha, len(data), None)
    outcome = inspection.inspect(data, settings.background, settings.max_pixels)
    if outcome.get("decoded"):
        store = storage.get_storage()
        blob = blob_uri(settings.blobs, sha, outcome["format"])
        if not store.exists(blob):
            store.put_bytes(blob, data)
    return Scanned(name, sha, len(data), outcome)


def _inline(jobs: Iterable[tuple[str, str]], settings: ScanSettings) -> Iterator[Scanned]:
    for name, uri in jobs:
        yield scan_one(name, uri, settings)


# -- worker processes ---------------------------------------------------------------------------------

_settings: ScanSettings | None = None  # a worker's copy, sent once when it starts rather than with every job


def _start_worker(settings: ScanSettings, environment: dict[str, str]) -> None:
    global _settings
    _settings = settings
    # A forkserver outlives the environment it started in; workers use the caller's endpoints of now.
    os.environ.clear()
    os.environ.update(environment)


def _scan_in_worker(name: str, uri: str) -> Scanned:
    assert _settings is not None, "worker started without _start_worker"
    return scan_one(name, uri, _settings)


def _pooled(jobs: list[tuple[str, str]], settings: ScanSettings, workers: int) -> Iterator[Scanned]:
    try:
        yield from _pool_map(jobs, settings, workers)
    except BrokenProcessPool as err:
        raise WorkerDied(
            "an ingest worker process died: out of memory, or (in a script of your own) a module that runs "
            "ingest when imported; worker processes import the main module, so guard the call with "
            "`if __name__ == '__main__':`, or set ingest.workers=1 to decode in this process"
        ) from err


def _pool_map(jobs: list[tuple[str, str]], settings: ScanSettings, workers: int) -> Iterator[Scanned]:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":  # imported once in the server, so each worker starts in milliseconds
        context.set_forkserver_preload(["artlora.stages.ingest.scanning", "scipy.fftpack"])
    limit = workers * IN_FLIGHT_PER_WORKER
    pending: set[Future] = set()
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(settings, dict(os.environ))
    )
    try:
        for name, uri in jobs:
            pending.add(pool.submit(_scan_in_worker, name, uri))
            if len(pending) >= limit:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
    finally:
        # After an error (an object store that stopped answering), the jobs not started are dropped: waiting for
        # each to fail in turn would multiply the time until the error is reported.
        pool.shutdown(wait=True, cancel_futures=True)
