"""The S3 layer against a real endpoint (SeaweedFS on loopback): objects, prefixes, files, markers."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from artlora.errors import ArtloraError
from artlora.io import settings, storage
from artlora.io.storage import StorageError, is_s3, join, parse_uri

# -- URIs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/key", ("bucket", "key")),
        ("s3://bucket/a/b/c.json", ("bucket", "a/b/c.json")),
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/prefix/", ("bucket", "prefix/")),
        ("s3://my.bucket-1/k", ("my.bucket-1", "k")),
    ],
)
def test_parse_uri(uri, expected):
    assert parse_uri(uri) == expected


@pytest.mark.parametrize("uri", ["bucket/key", "/local/path", "S3://bucket/key", "s3:/bucket/key", "http://x/y", ""])
def test_parse_uri_rejects_non_s3(uri):
    with pytest.raises(StorageError, match="not an s3:// URI"):
        parse_uri(uri)
    assert not is_s3(uri)


@pytest.mark.parametrize("uri", ["s3://", "s3:///key", "s3:///", "s3://ab/key", "s3://Upper/key", "s3://-x-/k"])
def test_parse_uri_rejects_missing_or_bad_bucket(uri):
    with pytest.raises(StorageError, match="bad bucket name"):
        parse_uri(uri)


@pytest.mark.parametrize(
    ("base", "parts", "expected"),
    [
        ("s3://b", ("k",), "s3://b/k"),
        ("s3://b/", ("k",), "s3://b/k"),
        ("s3://b/pre/", ("/a/", "b.json"), "s3://b/pre/a/b.json"),
        ("s3://b/pre", ("a/b", "c"), "s3://b/pre/a/b/c"),
        ("s3://b/pre//", ("//x//",), "s3://b/pre/x"),
        ("s3://b/pre", (), "s3://b/pre"),
        ("s3://b/pre/", (), "s3://b/pre"),
    ],
)
def test_join(base, parts, expected):
    assert join(base, *parts) == expected


def test_storage_error_is_reported_by_the_cli_as_one_line():
    assert issubclass(StorageError, ArtloraError)


# -- single objects -----------------------------------------------------------------------------------


def test_put_get_bytes(store, bucket):
    uri = join(bucket, "a/b/blob.bin")
    data = bytes(range(256)) * 10
    store.put_bytes(uri, data)
    assert store.get_bytes(uri) == data
    store.put_bytes(uri, b"replaced")
    assert store.get_bytes(uri) == b"replaced"
    store.put_bytes(join(bucket, "empty"), b"")
    assert store.get_bytes(join(bucket, "empty")) == b""


def test_put_get_json(store, bucket):
    uri = join(bucket, "doc.json")
    obj = {"b": [1, 2.5, None, True], "a": {"nested": "ünïcode"}}
    store.put_json(uri, obj)
    assert store.get_json(uri) == obj
    raw = store.get_bytes(uri).decode()
    assert raw.index('"a"') < raw.index('"b"')  # sorted keys: stable bytes for equal objects


def test_get_missing_key_names_the_uri(store, bucket):
    store.put_bytes(join(bucket, "present"), b"x")
    missing = join(bucket, "absent/key.json")
    with pytest.raises(StorageError, match="no object at") as info:
        store.get_bytes(missing)
    assert missing in str(info.value)
    with pytest.raises(StorageError, match=missing):
        store.get_json(missing)


def test_get_from_missing_bucket_names_the_uri(store):
    missing = "s3://no-such-bucket-artlora/key"
    with pytest.raises(StorageError, match=missing):
        store.get_bytes(missing)


def test_put_without_key_is_refused(store):
    with pytest.raises(StorageError, match="no object key"):
        store.put_bytes("s3://artlora-no-key", b"x")
    with pytest.raises(StorageError, match="no object key"):
        store.put_bytes("s3://artlora-no-key/", b"x")


def test_put_creates_the_bucket(store):
    name = f"test-created-{uuid.uuid4().hex[:8]}"  # a bucket root of its own (`bucket` is a prefix in a shared one)
    assert not store.client.bucket_exists(name)
    store.put_bytes(f"s3://{name}/k", b"x")
    assert store.client.bucket_exists(name)


def test_head_returns_user_metadata_and_none_when_missing(store, bucket):
    uri = join(bucket, "with-meta")
    store.put_bytes(uri, b"x", metadata={"sha256": "abc123", "Origin": "test"})
    assert store.head(uri) == {"sha256": "abc123", "origin": "test"}
    plain = join(bucket, "plain")
    store.put_bytes(plain, b"y")
    assert store.head(plain) == {}
    assert store.exists(plain)
    assert store.head(join(bucket, "missing")) is None
    assert not store.exists(join(bucket, "missing"))
    assert store.head("s3://no-such-bucket-artlora/key") is None


# -- prefixes -----------------------------------------------------------------------------------------


def test_list_is_recursive_in_key_order_and_respects_the_prefix_boundary(store, bucket):
    keys = ["pre/z.txt", "pre/a/2.bin", "pre/a/10.bin", "pre/b/c/d/deep.json", "pre/B.txt", "prefix-other/x", "top"]
    for key in keys:
        store.put_bytes(join(bucket, key), key.encode())
    expected = sorted(join(bucket, k) for k in keys if k.startswith("pre/"))
    assert list(store.list(join(bucket, "pre"))) == expected
    assert list(store.list(join(bucket, "pre/"))) == expected
    assert list(store.list(bucket)) == sorted(join(bucket, k) for k in keys)
    assert list(store.list(join(bucket, "pre/a"))) == [join(bucket, "pre/a/10.bin"), join(bucket, "pre/a/2.bin")]
    assert list(store.list(join(bucket, "nothing-here"))) == []


def test_list_of_a_missing_bucket_is_empty(store):
    assert list(store.list("s3://no-such-bucket-artlora/prefix")) == []
    assert list(store.list("s3://no-such-bucket-artlora")) == []


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "model_index.json": b'{"a": 1}',
        "unet/config.json": b"{}",
        "unet/weights.safetensors": os.urandom(4096),
        "vae/deep/er/file.bin": b"\x00\x01\x02",
        "empty.txt": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_upload_dir_download_dir_round_trip(store, bucket, tmp_path):
    files = make_tree(tmp_path / "src")
    prefix = join(bucket, "models/tiny")
    uris = store.upload_dir(tmp_path / "src", prefix)
    assert uris == sorted(join(prefix, name) for name in files)
    assert list(store.list(prefix)) == uris
    out = store.download_dir(prefix, tmp_path / "dst")
    assert out == tmp_path / "dst"
    assert read_tree(out) == files
    # With a trailing slash on the prefix the layout is the same.
    assert read_tree(store.download_dir(prefix + "/", tmp_path / "dst2")) == files


def test_download_dir_of_an_empty_prefix_raises(store, bucket, tmp_path):
    with pytest.raises(StorageError, match="nothing under"):
        store.download_dir(join(bucket, "empty"), tmp_path / "dst")


def test_large_file_goes_up_as_multipart_and_comes_back_identical(store, bucket, tmp_path, monkeypatch):
    part = 5 * 1024 * 1024  # S3's smallest part
    monkeypatch.setattr(storage, "PART_SIZE", part)
    path = tmp_path / "big.bin"
    data = os.urandom(12 * 1024 * 1024 + 123)
    path.write_bytes(data)
    uri = join(bucket, "big/big.bin")
    store.put_file(uri, path)
    name, key = parse_uri(uri)
    stat = store.client.stat_object(name, key)
    assert stat.size == len(data)
    # A multipart object's ETag is "<md5 of the part md5s>-<number of parts>".
    assert stat.etag.strip('"').endswith("-3"), stat.etag
    back = store.get_file(uri, tmp_path / "out" / "big.bin")
    assert back.read_bytes() == data
    assert sorted(p.name for p in back.parent.iterdir()) == ["big.bin"]


def test_small_file_goes_up_in_one_put(store, bucket, tmp_path):
    path = tmp_path / "small.bin"
    path.write_bytes(b"small")
    uri = join(bucket, "small.bin")
    store.put_file(uri, path)
    name, key = parse_uri(uri)
    assert "-" not in store.client.stat_object(name, key).etag
    assert store.get_bytes(uri) == b"small"


def test_get_file_overwrites_and_creates_parents(store, bucket, tmp_path):
    uri = join(bucket, "f.bin")
    store.put_bytes(uri, b"new content")
    target = tmp_path / "a" / "b" / "f.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old")
    assert store.get_file(uri, target) == target
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_get_file_leaves_nothing_when_the_object_is_missing(store, bucket, tmp_path):
    store.put_bytes(join(bucket, "other"), b"x")
    folder = tmp_path / "out"
    missing = join(bucket, "missing.bin")
    with pytest.raises(StorageError, match=missing):
        store.get_file(missing, folder / "missing.bin")
    assert list(folder.iterdir()) == []  # no partial file, no temporary file
    # An existing file at the target is left as it was.
    (folder / "keep.bin").write_bytes(b"keep")
    with pytest.raises(StorageError):
        store.get_file(missing, folder / "keep.bin")
    assert [p.name for p in folder.iterdir()] == ["keep.bin"]
    assert (folder / "keep.bin").read_bytes() == b"keep"


def test_get_file_from_a_missing_bucket_leaves_nothing(store, tmp_path):
    with pytest.raises(StorageError):
        store.get_file("s3://no-such-bucket-artlora/x.bin", tmp_path / "x.bin")
    assert list(tmp_path.iterdir()) == []


# -- completeness markers and deletion ----------------------------------------------------------------


def test_mark_complete_and_is_complete(store, bucket):
    prefix = join(bucket, "datasets/abc")
    store.put_bytes(join(prefix, "manifest.json"), b"{}")
    assert not store.is_complete(prefix)
    store.mark_complete(prefix, {"items": 3})
    assert store.is_complete(prefix)
    assert store.is_complete(prefix + "/")
    assert store.get_json(join(prefix, storage.COMPLETE_MARKER)) == {"items": 3}
    # The marker belongs to its prefix only: neither a parent, a sibling nor a child counts as complete.
    assert not store.is_complete(join(bucket, "datasets"))
    assert not store.is_complete(join(bucket, "datasets/abcd"))
    assert not store.is_complete(join(prefix, "sub"))
    other = join(bucket, "datasets/empty-info")
    store.mark_complete(other)
    assert store.get_json(join(other, storage.COMPLETE_MARKER)) == {}


def test_is_complete_for_a_missing_bucket(store):
    assert not store.is_complete("s3://no-such-bucket-artlora/prefix")


def test_delete_prefix(store, bucket):
    keys = ["run/a", "run/sub/b", "run/sub/deeper/c", "run-2/keep", "runner", "other/keep"]
    for key in keys:
        store.put_bytes(join(bucket, key), b"x")
    store.mark_complete(join(bucket, "run"))
    store.delete_prefix(join(bucket, "run"))
    assert list(store.list(bucket)) == sorted(join(bucket, k) for k in ["run-2/keep", "runner", "other/keep"])
    assert not store.is_complete(join(bucket, "run"))
    store.delete_prefix(join(bucket, "run"))  # deleting nothing is fine
    store.delete_prefix("s3://no-such-bucket-artlora/x")


# -- conditional writes -----------------------------------------------------------------------------


def test_conditional_writes_happen_only_where_the_object_is_as_expected(store, bucket):
    uri = join(bucket, "lease")
    first = store.put_new(uri, b"first")
    assert first and store.put_new(uri, b"second") is None, "put_new writes only where nothing is"
    assert store.get_versioned(uri) == (b"first", first)
    assert store.replace(uri, b"stale", "0" * 32) is None, "replace writes only over the version read"
    second = store.replace(uri, b"second", first)
    assert second and second != first and store.get_bytes(uri) == b"second"
    assert not store.delete_if(uri, first), "delete_if deletes only the version read"
    assert store.delete_if(uri, second) and store.get_versioned(uri) is None
    assert not store.delete_if(uri, second)


# -- the configured endpoint --------------------------------------------------------------------------


def test_get_storage_without_endpoint_names_the_variable(s3_endpoint, monkeypatch):
    monkeypatch.delenv(settings.S3_ENDPOINT, raising=False)
    with pytest.raises(StorageError, match=settings.S3_ENDPOINT) as info:
        storage.get_storage()
    assert "ARTLORA_S3_ENDPOINT" in str(info.value)


def test_blank_endpoint_counts_as_unset(s3_endpoint, monkeypatch):
    monkeypatch.setenv(settings.S3_ENDPOINT, "   ")
    with pytest.raises(StorageError, match="ARTLORA_S3_ENDPOINT"):
        storage.get_storage()


def test_get_storage_is_one_client_per_endpoint(s3_endpoint):
    assert storage.get_storage() is storage.get_storage()
    assert os.environ[settings.S3_ENDPOINT] == s3_endpoint
    s3 = settings.s3_settings()
    assert s3 is not None and s3.url == s3_endpoint and not s3.secure


# -- keys that would name another place -----------------------------------------------------------------


@pytest.mark.parametrize(
    "uri", ["s3://bucket/a/../b", "s3://bucket/..", "s3://bucket/a/./b", "s3://bucket//etc/passwd", "s3://bucket/a/.."]
)
def test_keys_with_dot_segments_or_a_leading_slash_are_refused(store, uri):
    with pytest.raises(StorageError, match="refusing object key"):
        parse_uri(uri)
    with pytest.raises(StorageError, match="refusing object key"):
        store.put_bytes(uri, b"x")


class PlantedListing(storage.Storage):
    """The real store, whose listing also holds a key with `..` segments under the prefix. AWS S3 and MinIO store
    such keys; SeaweedFS, the store the tests run, refuses to, so this listing is the one stand-in here."""

    def __init__(self, real: storage.Storage, planted: str):
        super().__init__(real.client, real.endpoint, real.limits)
        self.planted = planted

    def objects(self, prefix_uri: str):
        yield from super().objects(prefix_uri)
        yield storage.ObjectInfo(self.planted, 7, "0" * 32)


def test_a_prefix_download_never_leaves_its_folder(store, bucket, tmp_path):
    store.put_bytes(join(bucket, "models/m/ok.txt"), b"fine")
    planted = PlantedListing(store, join(bucket, "models/m/../../../escaped.txt"))
    target = tmp_path / "inside" / "model"
    with pytest.raises(StorageError, match=r"refusing object key '.*models/m/\.\./\.\./\.\./escaped\.txt'"):
        planted.download_dir(join(bucket, "models", "m"), target)
    assert not list(tmp_path.rglob("escaped.txt"))
    store.download_dir(join(bucket, "models", "m"), target)
    assert (target / "ok.txt").read_bytes() == b"fine"
