"""A folder's manifest: every file under it (relative POSIX path) with the sha256 of its bytes, and what differs
between a folder and the manifest recorded for it (a missing, extra or changed file, named)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(folder: str | Path, ignored: Iterable[str] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (symlinks are files here too: what a reader gets),
    sorted by path; names in `ignored` (at any depth) left out."""
    root = Path(folder)
    skip = set(ignored)
    files = sorted(path for path in root.rglob("*") if path.is_file() and path.name not in skip)
    return {path.relative_to(root).as_posix(): file_sha256(path) for path in files}


def encode(files: Mapping[str, str]) -> str:
    """Compact JSON, as a tag value (MLflow keeps version tags up to 5,000 characters)."""
    return json.dumps(dict(sorted(files.items())), separators=(",", ":"))


def decode(text: str) -> dict[str, str]:
    value = json.loads(text)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("a manifest is a JSON object of path -> sha256")
    return value


def differences(recorded: Mapping[str, str], found: Mapping[str, str]) -> list[str]:
    """What is wrong with `found` against `recorded`, one phrase per file, sorted by path; empty when they agree."""
    problems = []
    for path in sorted(set(recorded) | set(found)):
        if path not in found:
            problems.append(f"{path} is missing")
        elif path not in recorded:
            problems.append(f"{path} is not one of its files")
        elif found[path] != recorded[path]:
            problems.append(f"{path} has changed (sha256 {found[path][:12]}, registered {recorded[path][:12]})")
    return problems
