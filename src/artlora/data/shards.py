"""Cache shards: safetensors files that say which cache key they hold and can prove they are whole.

Each shard's safetensors header carries metadata: its cache key (`artlora.key`) and the sha256 of its tensor
bytes (`artlora.payload_sha256`). A shard is therefore checked from its own bytes, never from object metadata that
can survive damage to the body: a truncated upload, a damaged body or a shard stored under another key's name is
refused (`check`). The index records each shard's whole-file sha256 as well, which the readers verify.

Runs that race are safe. A shard's bytes follow from its tensors alone (`tensor_files.save_bytes`: sorted
header), so two runs encoding the same key write the same bytes. A run writes a key only if no shard is stored
there when it is about to (the first writer's bytes stay), and the checksum it puts in its index is the one stored
with the object (`stored_checksums`), so an index always describes the bytes that are there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from artlora.data.tensor_files import save_bytes
from artlora.io import storage

log = logging.getLogger(__name__)

KEY = "artlora.key"
PAYLOAD_SHA256 = "artlora.payload_sha256"
CHECKSUM = "sha256"  # the object metadata holding the whole shard's sha256, written with it in one PUT


class CorruptShardError(ValueError):
    """A shard whose bytes are not what they should be (damaged, partial, or another key's)."""


def pack(key: str, tensors: Mapping[str, torch.Tensor]) -> bytes:
    """A safetensors shard of `tensors` whose header names `key` and the checksum of the tensor bytes."""
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    # The tensor bytes do not depend on the header, so they can be hashed before the header is final.
    payload = _split(save(tensors))[1]
    return save_bytes(tensors, metadata={KEY: key, PAYLOAD_SHA256: hashlib.sha256(payload).hexdigest()})


def _split(data: bytes) -> tuple[dict, memoryview]:
    """(header, tensor bytes) of a safetensors file; CorruptShardError if the header cannot be read."""
    if len(data) < 8:
        raise CorruptShardError(f"{len(data)} bytes: too short for a safetensors header")
    length = int.from_bytes(data[:8], "little")
    if 8 + length > len(data):
        raise CorruptShardError("truncated inside its header")
    try:
        header = json.loads(bytes(data[8 : 8 + length]))
    except ValueError as err:
        raise CorruptShardError(f"unreadable header ({err})") from None
    if not isinstance(header, dict):
        raise CorruptShardError("unreadable header (not a mapping)")
    return header, memoryview(data)[8 + length :]


def check(data: bytes, key: str, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of a whole shard for `key` holding `names`; CorruptShardError saying why it is not one."""
    header, payload = _split(data)
    metadata = header.get("__metadata__") or {}
    if metadata.get(KEY) != key:
        raise CorruptShardError(f"holds key {metadata.get(KEY)!r}, not {key!r}")
    if hashlib.sha256(payload).hexdigest() != metadata.get(PAYLOAD_SHA256):
        raise CorruptShardError("tensor bytes do not match their checksum (damaged or partial)")
    try:
        tensors = load(data)
    except SafetensorError as err:
        raise CorruptShardError(f"unreadable tensors ({err})") from None
    missing = set(names) - set(tensors)
    if missing:
        raise CorruptShardError(f"lacks tensors {sorted(missing)}")
    return tensors


def put(store: storage.Storage, uri: str, key: str, tensors: Mapping[str, torch.Tensor], replace: bool = False) -> str:
    """Store a shard in one PUT, its whole-file sha256 as object metadata; returns that checksum.

    Unless `replace` (a stored shard failed its check), a shard that another run stored meanwhile is kept: its
    checksum is returned and nothing is written."""
    if not replace:
        stored = store.head(uri)
        if stored is not None and stored.get(CHECKSUM):
            return stored[CHECKSUM]
    data = pack(key, tensors)
    checksum = hashlib.sha256(data).hexdigest()
    store.put_bytes(uri, data, metadata={CHECKSUM: checksum})
    return checksum


def stored_checksums(store: storage.Storage, uris: Mapping[str, str]) -> dict[str, str]:
    """{key: the sha256 stored with the shard at uris[key]}: what is there now, whichever run wrote it last."""

    def one(uri: str) -> str:
        metadata = store.head(uri)
        if metadata is None or not metadata.get(CHECKSUM):
            raise storage.MissingObjectError(f"the cache shard {uri} just written is gone; run augment again")
        return metadata[CHECKSUM]

    return dict(zip(uris, storage.parallel(one, uris.values()), strict=True))


@dataclass
class Verified:
    """What a check of stored shards found, by key."""

    whole: dict[str, str] = field(default_factory=dict)  # key -> whole-file sha256 of a shard that passed
    corrupt: dict[str, str] = field(default_factory=dict)  # key -> why the stored shard was refused


def verify(store: storage.Storage, shards: Mapping[str, str], names: tuple[str, ...]) -> Verified:
    """Download and check the shards {key: uri} that exist, in parallel. Absent keys are in neither field.

    Every byte is read and hashed: a cached shard is trusted only after it proves itself whole, which costs a
    fraction of what encoding it again would.
    """
    result = Verified()

    def one(key: str) -> None:
        uri = shards[key]
        try:
            data = store.get_bytes(uri)
        except storage.MissingObjectError:
            return
        try:
            check(data, key, names)
        except CorruptShardError as err:
            log.warning("cache shard %s is refused and will be rebuilt: %s", uri, err)
            result.corrupt[key] = str(err)
            return
        result.whole[key] = hashlib.sha256(data).hexdigest()

    storage.parallel(one, shards)
    return result
