"""The one content digest: what cache keys, run keys and index names are made of."""

from __future__ import annotations

import hashlib
import json


def digest(*parts: object) -> str:
    """A stable 32-hex-digit hash of JSON-able parts (dict keys sorted, so their order never matters)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
