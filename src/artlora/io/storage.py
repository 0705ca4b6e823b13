"""The one place that talks S3: `s3://bucket/key` URIs over the minio SDK.

Every object is written with a single PUT (or a multipart upload that S3 completes atomically), so a reader
never sees half an object. Things made of many objects (a dataset version, a checkpoint, a cache shard set)
are finished by `mark_complete`, written last; readers trust only prefixes that carry the marker.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import urllib3
from minio import Minio
from minio.error import S3Error

from artlora.errors import ArtloraError
from artlora.io import settings

COMPLETE_MARKER = "_COMPLETE"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Files above this size go up in parts of this size, several in parallel.
PART_SIZE = 16 * 1024 * 1024


class StorageError(ArtloraError):
    """An object store problem a user can act on (no endpoint, missing object, bad URI)."""


def parse_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/key` into (bucket, key); the key may be empty."""
    if not uri.startswith("s3://"):
        raise StorageError(f"not an s3:// URI: {uri!r} (expected s3://bucket/key)")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise StorageError(f"bad bucket name in {uri!r}: 3-63 lower-case letters, digits, dots or hyphens")
    return bucket, key


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

    def __init__(self, client: Minio):
        self.client = client
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
        self.client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type, metadata=metadata)

    def get_bytes(self, uri: str) -> bytes:
        bucket, key = parse_uri(uri)
        try:
            response = self.client.get_object(bucket, key)
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket"):
                raise StorageError(f"no object at {uri}") from err
            raise
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
        self.client.fput_object(bucket, key, str(path), part_size=PART_SIZE)

    def get_file(self, uri: str, path: str | Path) -> Path:
        """Download to `path` through a temporary file, so an interrupted download leaves nothing behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        try:
            bucket, key = parse_uri(uri)
            self.client.fget_object(bucket, key, tmp)
            os.replace(tmp, path)
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket"):
                raise StorageError(f"no object at {uri}") from err
            raise
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    def head(self, uri: str) -> dict[str, str] | None:
        """The object's user metadata (keys lower-case, without the x-amz-meta- prefix), or None if absent."""
        bucket, key = parse_uri(uri)
        try:
            stat = self.client.stat_object(bucket, key)
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket", "NotFound", "ResourceNotFound"):
                return None
            raise
        prefix = "x-amz-meta-"
        return {k.lower()[len(prefix) :]: v for k, v in (stat.metadata or {}).items() if k.lower().startswith(prefix)}

    def exists(self, uri: str) -> bool:
        return self.head(uri) is not None

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
        if not self.client.bucket_exists(bucket):
            return
        for obj in self.client.list_objects(bucket, prefix=key, recursive=True):
            yield ObjectInfo(f"s3://{bucket}/{obj.object_name}", obj.size or 0, (obj.etag or "").strip('"'))

    def upload_dir(self, local_dir: str | Path, prefix_uri: str) -> list[str]:
        local_dir = Path(local_dir)
        uris = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            uri = join(prefix_uri, path.relative_to(local_dir).as_posix())
            self.put_file(uri, path)
            uris.append(uri)
        return uris

    def download_dir(self, prefix_uri: str, local_dir: str | Path) -> Path:
        local_dir = Path(local_dir)
        base = parse_uri(prefix_uri)[1].rstrip("/")
        found = False
        for uri in self.list(prefix_uri):
            relative = parse_uri(uri)[1][len(base) :].lstrip("/")
            self.get_file(uri, local_dir / relative)
            found = True
        if not found:
            raise StorageError(f"nothing under {prefix_uri}")
        return local_dir

    def delete_prefix(self, prefix_uri: str) -> None:
        bucket, _ = parse_uri(prefix_uri)
        for uri in list(self.list(prefix_uri)):
            self.client.remove_object(bucket, parse_uri(uri)[1])

    # -- completeness markers -------------------------------------------------------------------------

    def mark_complete(self, prefix_uri: str, info: dict[str, Any] | None = None) -> None:
        """Declare a multi-object write finished. Call it after every other object is written."""
        self.put_json(join(prefix_uri, COMPLETE_MARKER), info or {})

    def is_complete(self, prefix_uri: str) -> bool:
        return self.exists(join(prefix_uri, COMPLETE_MARKER))

    # -- internals ------------------------------------------------------------------------------------

    def _writable(self, uri: str) -> tuple[str, str]:
        bucket, key = parse_uri(uri)
        if not key:
            raise StorageError(f"no object key in {uri!r}")
        if bucket not in self._buckets:
            if not self.client.bucket_exists(bucket):
                try:
                    self.client.make_bucket(bucket)
                except S3Error as err:  # another stage made it meanwhile
                    if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self._buckets.add(bucket)
        return bucket, key


def client_for(s3: settings.S3Settings) -> Minio:
    # Retries with back-off on connection errors and 5xx answers: object stores drop connections under load.
    retry = urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504))
    # Connections kept per host: augment runs 16 shard uploads beside 4 image loaders, and a smaller pool would
    # open and drop a connection per request beyond it (warning "Connection pool is full" each time).
    http = urllib3.PoolManager(retries=retry, timeout=urllib3.Timeout(connect=10, read=300), maxsize=32)
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
    return Storage(client_for(s3))


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
