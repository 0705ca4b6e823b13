"""Moving an alias by hand (`artlora models promote NAME/VERSION --alias champion --reason ...`), with who did it,
when and why recorded as tags on the version that takes the alias."""

from __future__ import annotations

import datetime
import getpass
import os

from artlora.data import lineage
from artlora.io import model_registry
from artlora.registry import references


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return os.environ.get("USER", "unknown")


def promote(reference: str, alias: str, reason: str) -> dict:
    """Point `alias` at the referenced version; returns what was done, with the version that had the alias."""
    parsed = references.parse(reference)
    if not (parsed.version or parsed.alias):
        raise references.RegistryError(
            f"{reference!r} names no version (give NAME/VERSION or NAME@ALIAS: the version to promote)"
        )
    version = references.resolve(reference)
    previous = (model_registry.model_aliases(version.name) or {}).get(alias)
    model_registry.set_alias(version.name, alias, version.version)
    record = {
        "by": current_user(),
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "reason": reason,
        "previous": previous or "",
    }
    model_registry.set_version_tags(
        version.name,
        version.version,
        {f"{lineage.PROMOTED_PREFIX}{alias}.{key}": value for key, value in record.items()},
    )
    return {"model": version.name, "version": version.version, "alias": alias, **record}
