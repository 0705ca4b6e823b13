"""The scan index: content hash -> inspection outcome, so a re-ingest decodes only new or changed files.

One JSON object per storage root and measuring method, `<storage_root>/datasets/index/<key>.json`; the key hashes
inspection.MEASURE_VERSION and the background colour (the one setting that changes a measurement). Outcomes are
measurements, not verdicts, so every other curation setting can change without decoding anything again.

Saving merges into what is stored at that moment. Two ingests finishing together may still lose each other's
new outcomes; those files are then decoded again next time: a cost, never a wrong answer, because an outcome
depends only on the bytes its key names.
"""

from __future__ import annotations

import hashlib
import json

from artlora.data import images
from artlora.io import storage
from artlora.stages.ingest import inspection
from artlora.stages.ingest.inspection import Outcome

Index = dict[str, Outcome]


def index_uri(storage_root: str, background: images.RGB) -> str:
    key = hashlib.sha256(json.dumps([inspection.MEASURE_VERSION, list(background)]).encode()).hexdigest()[:16]
    return storage.join(storage_root, "datasets", "index", f"{key}.json")


def load(store: storage.Storage, uri: str) -> Index:
    try:
        return store.get_json(uri)
    except storage.MissingObjectError:  # no index yet: everything is new
        return {}


def save(store: storage.Storage, uri: str, new: Index) -> None:
    """Add `new` outcomes to the stored index (nothing is written when there are none)."""
    if not new:
        return
    merged = {**load(store, uri), **new}
    data = json.dumps(merged, sort_keys=True, separators=(",", ":")).encode()
    store.put_bytes(uri, data, content_type="application/json")


def reusable(index: Index, max_pixels: int) -> frozenset[str]:
    """Hashes whose stored outcome holds under this pixel limit: all but images once skipped as too large that
    the limit now admits (those must be decoded)."""
    return frozenset(
        sha
        for sha, outcome in index.items()
        if outcome.get("decoded", True) or outcome["width"] * outcome["height"] > max_pixels
    )
