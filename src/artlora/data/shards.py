"""Cache shards: safetensors files that say which cache key they hold and can prove they are whole.

Each shard's safetensors header carries metadata: its cache key (`artlora.key`) and the sha256 of its tensor
bytes (`artlora.payload_sha256`). A shard is therefore checked from its own bytes, never from object metadata that
can survive damage to the body: a truncated upload, a damaged body or a shard stored under another key's name is
refused (`check`). The index records each shard's whole-file sha256 as well, which the readers verify.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from artlora.io import storage

log = logging.getLogger(__name__)

KEY = "artlora.key"
PAYLOAD_SHA256 = "artlora.payload_sha256"
# Many small GETs and PUTs are latency-bound: this many run at once (the storage client pools 16 connections).
PARALLEL = 16


class CorruptShardError(ValueError):
    """A shard whose bytes are not what they should be (damaged, partial, or another key's)."""


def pack(key: str, tensors: Mapping[str, torch.Tensor]) -> bytes:
    """A safetensors shard of `tensors` whose header names `key` and the checksum of the tensor bytes."""
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    # The tensor bytes do not depend on the header, so they can be hashed before the header is final.
    payload = _split(save(tensors))[1]
    return save(tensors, metadata={KEY: key, PAYLOAD_SHA256: hashlib.sha256(payload).hexdigest()})


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


def put(store: storage.Storage, uri: str, key: str, tensors: Mapping[str, torch.Tensor]) -> str:
    """Store a shard in one PUT; returns its whole-file sha256 (also kept as object metadata, for operators)."""
    data = pack(key, tensors)
    checksum = hashlib.sha256(data).hexdigest()
    store.put_bytes(uri, data, metadata={"sha256": checksum})
    return checksum


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
        except storage.StorageError:
            return
        try:
            check(data, key, names)
        except CorruptShardError as err:
            log.warning("cache shard %s is refused and will be rebuilt: %s", uri, err)
            result.corrupt[key] = str(err)
            return
        result.whole[key] = hashlib.sha256(data).hexdigest()

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        list(pool.map(one, shards))
    return result
