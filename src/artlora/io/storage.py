"""The one place that talks S3: `s3://bucket/key` URIs over the minio SDK.

Every object is written with a single PUT (or a multipart upload that S3 completes atomically), so a reader
never sees half an object. Things made of many objects (a dataset version, a checkpoint, a cache shard set)
are finished by `mark_complete`, written last; readers trust only prefixes that carry the marker.

Failures are bounded and named: every request gives up after the timeouts and retries of `settings.S3Limits`
(about a minute for an endpoint that froze), and whatever the SDK or the connection raises becomes a StorageError
naming the endpoint and the object (MissingObjectError when the object or bucket is not there). Keys with `.` or
`..` segments or a leading slash are refused, so no listing can make a download leave its folder.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import re
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from artlora.errors import ArtloraError, writing
from artlora.io import settings

COMPLETE_MARKER = "_COMPLETE"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Files above this size go up in parts of this size, several in parallel.
PART_SIZE = 16 * 1024 * 1024
# Many small GETs and PUTs are latency-bound: this many run at once (the client pools 32 connections per host).
PARALLEL = 16
_MISSING = ("NoSuchKey", "NoSuchBucket", "NotFound", "ResourceNotFound")
T = TypeVar("T")
R = TypeVar("R")


class StorageError(ArtloraError):
    """An object store problem a user can act on (no endpoint, missing object, bad URI)."""


class MissingObjectError(StorageError):
    """No object (or no bucket) at a URI."""


class _PreconditionFailed(StorageError):
    """A conditional write or delete lost its race (the object was there, or changed): never reaches a user."""


def parse_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/key` into (bucket, key); the key may be empty."""
    if not uri.startswith("s3://"):
        raise StorageError(f"not an s3:// URI: {uri!r} (expected s3://bucket/key)")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise StorageError(f"bad bucket name in {uri!r}: 3-63 lower-case letters, digits, dots or hyphens")
    check_key(key, uri)
    return bucket, key


def check_key(key: str, uri: str) -> None:
    """Refuse keys that would name another place once used as a path: absolute, or with `.`/`..` segments."""
    if key.startswith("/") or any(part in (".", "..") for part in key.split("/")):
        raise StorageError(
            f"refusing object key {key!r} in {uri!r}: keys must be relative, without '.' or '..' segments "
            "(remove or rename that object)"
        )


def join(uri: str, *parts: str) -> str:
    """Join path parts onto an s3:// URI with exactly one slash between them."""
    out = uri.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int  # bytes
    etag: str  # the store's content tag, without quotes


class Storage:
    """A thin, typed wrapper over a Minio client speaking s3:// URIs."""

    def __init__(self, client: Minio, endpoint: str = "", limits: settings.S3Limits | None = None):
        self.client = client
        self.endpoint = endpoint or "the S3 endpoint"
        self.limits = limits or settings.S3Limits.defaults()
        self._buckets: set[str] = set()

    # -- single objects -------------------------------------------------------------------------------

    def put_bytes(
        self,
        uri: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> None:
        bucket, key = self._writable(uri)
        with self._asking("write", uri):
            # minio types metadata dict[str, str | list[str] | tuple[str]], only reading it: a dict[str, str] is one
            self.client.put_object(
                bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata=metadata,  # type: ignore[arg-type]
            )

    def get_bytes(self, uri: str) -> bytes:
        bucket, key = parse_uri(uri)
        with self._asking("read", uri):
            response = self.client.get_object(bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def put_json(self, uri: str, obj: Any) -> None:
        data = json.dumps(obj, indent=2, sort_keys=True).encode()
        self.put_bytes(uri, data, content_type="application/json")

    def get_json(self, uri: str) -> Any:
        return json.loads(self.get_bytes(uri))

    def put_file(self, uri: str, path: str | Path) -> None:
        bucket, key = self._writable(uri)
        with self._asking("upload to", uri):
            self.client.fput_object(bucket, key, str(path), part_size=PART_SIZE)

    def get_file(self, uri: str, path: str | Path) -> Path:
        """Download to `path` through a temporary file, so an interrupted download leaves nothing behind."""
        path = Path(path)
        bucket, key = parse_uri(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        try:
            with writing(path), self._asking("download", uri):
                self.client.fget_object(bucket, key, tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
            # minio writes through `<tmp>.<etag>.part.minio`, and leaves it when the write fails (a full disk).
            for part in path.parent.glob(f"{Path(tmp).name}.*.part.minio"):
                part.unlink(missing_ok=True)
        return path

    def head(self, uri: str) -> dict[str, str] | None:
        """The object's user metadata (keys lower-case, without the x-amz-meta- prefix), or None if absent."""
        bucket, key = parse_uri(uri)
        try:
            with self._asking("look up", uri):
                stat = self.client.stat_object(bucket, key)
        except MissingObjectError:
            return None
        prefix = "x-amz-meta-"
        return {k.lower()[len(prefix) :]: v for k, v in (stat.metadata or {}).items() if k.lower().startswith(prefix)}

    def exists(self, uri: str) -> bool:
        return self.head(uri) is not None

    # -- conditional writes (what a lease is made of) -------------------------------------------------
    # The store decides each race: S3's `If-None-Match: *` (write only if absent) and `If-Match: <etag>` (write or
    # delete only the version read). SeaweedFS, MinIO and AWS S3 honour both. minio's put_object cannot send them
    # (it turns unknown headers into user metadata), so these go through its request method.

    def put_new(self, uri: str, data: bytes) -> str | None:
        """Write `data` only if no object is at `uri`: its ETag, or None when one was there first."""
        return self._put_conditionally(uri, data, {"If-None-Match": "*"})

    def replace(self, uri: str, data: bytes, etag: str) -> str | None:
        """Overwrite the object only if it is still the version `etag`: the new ETag, or None when it changed."""
        return self._put_conditionally(uri, data, {"If-Match": f'"{etag}"'})

    def delete_if(self, uri: str, etag: str) -> bool:
        """Delete the object only if it is still the version `etag`; False when it changed or is gone."""
        bucket, key = parse_uri(uri)
        try:
            with self._asking("delete", uri):
                self.client._execute("DELETE", bucket, key, headers={"If-Match": f'"{etag}"'})
        except (_PreconditionFailed, MissingObjectError):
            return False
        return True

    def get_versioned(self, uri: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag (read together, so they belong to one version), or None when absent."""
        bucket, key = parse_uri(uri)
        try:
            with self._asking("read", uri):
                response = self.client.get_object(bucket, key)
                try:
                    return response.read(), (response.headers.get("ETag") or "").strip('"')
                finally:
                    response.close()
                    response.release_conn()
        except MissingObjectError:
            return None

    def _put_conditionally(self, uri: str, data: bytes, condition: dict[str, str]) -> str | None:
        # minio types headers dict[str, str | list[str] | tuple[str]], only reading them: a dict[str, str] is one
        bucket, key = self._writable(uri)
        try:
            with self._asking("write", uri):
                written = self.client._put_object(bucket, key, data, headers=condition)  # type: ignore[arg-type]
        except _PreconditionFailed:
            return None
        return (written.etag or "").strip('"')

    # -- prefixes -------------------------------------------------------------------------------------

    def list(self, prefix_uri: str) -> Iterator[str]:
        """Every object URI under a prefix (recursively), in key order."""
        return (info.uri for info in self.objects(prefix_uri))

    def objects(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        """Every object under a prefix (recursively), in key order, with its size and ETag: enough to tell a
        changed object from an unchanged one without reading it."""
        bucket, key = parse_uri(prefix_uri)
        if key and not key.endswith("/"):
            key += "/"
        with self._asking("list", prefix_uri):
            if not self.client.bucket_exists(bucket):
                return
            for obj in self.client.list_objects(bucket, prefix=key, recursive=True):
                yield ObjectInfo(f"s3://{bucket}/{obj.object_name}", obj.size or 0, (obj.etag or "").strip('"'))

    def upload_dir(self, local_dir: str | Path, prefix_uri: str) -> builtins.list[str]:  # `list` is a method here
        local_dir = Path(local_dir)
        uris = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            uri = join(prefix_uri, path.relative_to(local_dir).as_posix())
            self.put_file(uri, path)
            uris.append(uri)
        return uris

    def download_dir(self, prefix_uri: str, local_dir: str | Path) -> Path:
        """Every object under a prefix into a local folder; a key with `..` segments (which some stores allow) is
        refused by `parse_uri`, so nothing is written outside `local_dir`."""
        local_dir = Path(local_dir)
        base = parse_uri(prefix_uri)[1].rstrip("/")
        found = False
        for uri in self.list(prefix_uri):
            relative = parse_uri(uri)[1][len(base) :].lstrip("/")
            self.get_file(uri, local_dir / relative)
            found = True
        if not found:
            raise MissingObjectError(f"nothing under {prefix_uri}")
        return local_dir

    def delete_prefix(self, prefix_uri: str) -> None:
        bucket, _ = parse_uri(prefix_uri)
        for uri in list(self.list(prefix_uri)):
            with self._asking("delete", uri):
                self.client.remove_object(bucket, parse_uri(uri)[1])

    # -- completeness markers -------------------------------------------------------------------------

    def mark_complete(self, prefix_uri: str, info: dict[str, Any] | None = None) -> None:
        """Declare a multi-object write finished. Call it after every other object is written."""
        self.put_json(join(prefix_uri, COMPLETE_MARKER), info or {})

    def is_complete(self, prefix_uri: str) -> bool:
        return self.exists(join(prefix_uri, COMPLETE_MARKER))

    def completion(self, prefix_uri: str) -> dict[str, Any]:
        """What `mark_complete` recorded for a finished write."""
        return self.get_json(join(prefix_uri, COMPLETE_MARKER))

    # -- internals ------------------------------------------------------------------------------------

    def _writable(self, uri: str) -> tuple[str, str]:
        bucket, key = parse_uri(uri)
        if not key:
            raise StorageError(f"no object key in {uri!r}")
        if bucket not in self._buckets:
            with self._asking("create the bucket for", uri):
                if not self.client.bucket_exists(bucket):
                    try:
                        self.client.make_bucket(bucket)
                    except S3Error as err:  # another stage made it meanwhile
                        if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
            self._buckets.add(bucket)
        return bucket, key

    @contextlib.contextmanager
    def _asking(self, what: str, uri: str) -> Iterator[None]:
        """Turn what the SDK and the connection raise into a StorageError naming the endpoint and the object."""
        try:
            yield
        except S3Error as err:
            if err.code == "PreconditionFailed":
                raise _PreconditionFailed(f"{uri} changed meanwhile") from err
            if err.code in _MISSING:
                raise MissingObjectError(f"no object at {uri}") from err
            raise StorageError(
                f"S3 endpoint {self.endpoint} refused to {what} {uri}: {err.code}: {err.message} (check "
                f"{settings.S3_ACCESS_KEY}, {settings.S3_SECRET_KEY} and the bucket's permissions)"
            ) from err
        except (urllib3.exceptions.HTTPError, MinioException, ConnectionError) as err:
            raise StorageError(
                f"S3 endpoint {self.endpoint} did not answer when asked to {what} {uri} ({_reason(err)}; gave up "
                f"after {self.limits.describe()}): check that the store is up and {settings.S3_ENDPOINT}"
            ) from err


def _reason(err: BaseException) -> str:
    """The innermost cause urllib3 reports (connection refused, read timed out), on one line."""
    reason = getattr(err, "reason", None) or err
    return " ".join(f"{type(reason).__name__}: {reason}".split())


def parallel(fn: Callable[[T], R], items: Iterable[T], workers: int = PARALLEL) -> list[R]:
    """`fn` over `items` in `workers` threads, results in order. The first error cancels what has not started
    and is raised as soon as it happens: an unreachable store fails the call in one timeout, not one per item."""
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        # Of the calls failed by now, the earliest item's error: the same message on every run where it can be.
        errors = (future.exception() for future in futures if future in done)
        failed = next((error for error in errors if error is not None), None)
        if failed is not None:
            for future in futures:
                future.cancel()
            raise failed
        return [future.result() for future in futures]


class Background:
    """Calls run in `workers` threads with at most `limit` of them queued or running, so what they hold (an
    encoded shard waiting for its upload) stays bounded: `submit` waits for the oldest call when the queue is
    full and raises its error there. Leaving the block waits for the rest; leaving it by an error cancels the
    calls that have not started."""

    def __init__(self, workers: int = PARALLEL, limit: int = 2 * PARALLEL):
        self._pool = ThreadPoolExecutor(workers)
        self._limit = limit
        self._pending: deque[tuple[Any, Future]] = deque()
        self.results: dict[Any, Any] = {}  # by the name given to submit, as the calls finish

    def __enter__(self) -> Background:
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if error is None:
                while self._pending:
                    self._finish_oldest()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, name: Any, fn: Callable[..., Any], *args: Any) -> None:
        while len(self._pending) >= self._limit or (self._pending and self._pending[0][1].done()):
            self._finish_oldest()
        self._pending.append((name, self._pool.submit(fn, *args)))

    def _finish_oldest(self) -> None:
        name, future = self._pending.popleft()
        self.results[name] = future.result()


def client_for(s3: settings.S3Settings) -> Minio:
    limits = s3.limits
    # Retries with back-off on connection errors, read timeouts and 5xx answers: object stores drop connections
    # under load. Bounded (settings.S3Limits) so that an endpoint that froze is reported within about a minute.
    retry = urllib3.Retry(total=limits.retries, backoff_factor=limits.backoff, status_forcelist=(500, 502, 503, 504))
    # Connections kept per host: augment runs 16 shard uploads beside 4 image loaders, and a smaller pool would
    # open and drop a connection per request beyond it (warning "Connection pool is full" each time).
    timeout = urllib3.Timeout(connect=limits.connect_timeout, read=limits.read_timeout)
    http = urllib3.PoolManager(retries=retry, timeout=timeout, maxsize=32)
    return Minio(
        s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        secure=s3.secure,
        region=s3.region,
        http_client=http,
    )


@cache
def _storage_for(s3: settings.S3Settings) -> Storage:
    return Storage(client_for(s3), s3.url, s3.limits)


def get_storage() -> Storage:
    """The Storage for the endpoint in the environment (one client per endpoint per process)."""
    s3 = settings.s3_settings()
    if s3 is None:
        raise StorageError(
            f"no object store configured: set {settings.S3_ENDPOINT} (and {settings.S3_ACCESS_KEY}, "
            f"{settings.S3_SECRET_KEY}) to your MinIO/S3 endpoint, or start artlora's local one with "
            '`eval "$(artlora services up)"`'
        )
    return _storage_for(s3)
