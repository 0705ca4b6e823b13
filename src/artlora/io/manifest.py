"""A folder's manifest: every file under it (relative POSIX path) with the sha256 of its bytes, and what differs
between a folder and the manifest recorded for it (a missing, extra or changed file, named).

Each file is hashed once per process: a base model's weights (gigabytes) are checked on every use of a version,
and a long-lived process (a pyfunc server) may load several versions on the same base.
"""

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


# (path, device, inode, size, mtime, ctime) -> sha256. The ctime is in the key because nobody can set it back: a
# file rewritten in place with its size and mtime restored (`touch -d`) still gets a new key, and is hashed again.
_DIGESTS: dict[tuple[str, int, int, int, int, int], str] = {}


def cached_sha256(path: Path) -> str:
    """`file_sha256`, computed once per process for a file that has not been written to since."""
    found = path.stat()  # of the file a symlink points to: what a reader gets
    key = (str(path.absolute()), found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def manifest(folder: str | Path, ignored: Iterable[str] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (symlinks are files here too: what a reader gets),
    sorted by path; names in `ignored` (at any depth) left out."""
    root = Path(folder)
    skip = set(ignored)
    return digests(root, (path for path in root.rglob("*") if path.is_file() and path.name not in skip))


def digests(root: Path, files: Iterable[Path]) -> dict[str, str]:
    """{path relative to `root`: sha256} of `files`, sorted by path."""
    return {path.relative_to(root).as_posix(): cached_sha256(path) for path in sorted(files)}


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
