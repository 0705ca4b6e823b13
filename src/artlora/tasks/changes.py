"""Has anything changed since a registered version was trained? The cheap check before a pipeline trains.

Two digests decide it, and the register stage writes both on every version a pipeline registers (as tags):
- `source_fingerprint`: the source (and the regularisation images' source, when set) as listed, no image
  decoded. Under s3:// each object's key, size and ETag; in a local folder each file's path and size, with the
  content hash of small files (captions, metadata) and the modification time of the others (images). Hidden
  files are left out, as ingest leaves them out.
- `pipeline_config_digest`: the resolved config, less the `cluster:` section (where tasks run does not change the
  model) and, for the single-run pipeline, less the `search:` section it does not read.
A version carrying both digests covers the run when its adapter is still in the object store. The champion is
named when it is one of those versions.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from artlora.config import PipelineConfig
from artlora.contracts import REGULARISATION_STYLE
from artlora.data import lineage
from artlora.data.digests import digest
from artlora.errors import ArtloraError
from artlora.io import model_registry, storage

log = logging.getLogger(__name__)

# Files up to this size are hashed (captions, metadata.jsonl); larger ones are represented by size and mtime.
SMALL_FILE = 64 * 1024
CHAMPION = "champion"


class SourceError(ArtloraError):
    """The dataset source cannot be listed."""


@dataclass(frozen=True)
class Covering:
    """A registered version trained on the same source listing with the same config."""

    model_name: str
    version: str
    alias: str  # "champion", or "" when another version is the champion
    dataset_fingerprint: str


@dataclass(frozen=True)
class ChangeCheck:
    source_fingerprint: str
    config_digest: str
    files: int  # entries in the source listing
    covering: Covering | None

    @property
    def changed(self) -> bool:
        return self.covering is None

    def describe(self) -> str:
        what = (
            f"source fingerprint {self.source_fingerprint[:12]} ({self.files} files), config {self.config_digest[:12]}"
        )
        if self.covering is None:
            return f"changed: no registered version was trained on {what}"
        version = self.covering
        alias = f" ({version.alias})" if version.alias else ""
        return f"unchanged: {version.model_name} version {version.version}{alias} covers {what}"


def _local_entry(root: Path, path: Path) -> tuple[str, int, str]:
    info = path.stat()
    small = info.st_size <= SMALL_FILE
    mark = hashlib.sha256(path.read_bytes()).hexdigest() if small else str(info.st_mtime_ns)
    return path.relative_to(root).as_posix(), info.st_size, mark


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def source_listing(source: str, setting: str = "ingest.source") -> list[tuple[str, int, str]]:
    """(path relative to the source, size in bytes, ETag / content hash / mtime) of every file, sorted."""
    if storage.is_s3(source):
        root = source.rstrip("/") + "/"
        entries = [
            (info.uri.removeprefix(root), info.size, info.etag) for info in storage.get_storage().objects(source)
        ]
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise SourceError(f"{setting} {source} is not a folder (give a local folder or an s3:// prefix)")
        entries = [_local_entry(folder, path) for path in folder.rglob("*") if path.is_file()]
    return sorted(entry for entry in entries if not _hidden(entry[0]))


def listing_of(config: PipelineConfig) -> list[tuple[str, int, str]]:
    """The source's listing, and with regularisation images their source's too, each name under the reserved
    style as ingest names them (so a change to either is a change; without them the listing is the source's)."""
    listing = source_listing(config.ingest.source)
    if regularisation := config.ingest.regularisation_source:
        prefix = REGULARISATION_STYLE + "/"
        extra = source_listing(regularisation, "ingest.regularisation_source")
        listing = sorted(listing + [(prefix + name, size, mark) for name, size, mark in extra])
    return listing


def config_digest(config: PipelineConfig, search: bool = False) -> str:
    exclude = {"cluster"} if search else {"cluster", "search"}
    return digest("search" if search else "single", config.model_dump(mode="json", exclude=exclude))


def covering_version(config: PipelineConfig, source_fingerprint: str, config_hash: str) -> Covering | None:
    """The registered version trained on this listing and config whose adapter is still stored, if any."""
    tags = {lineage.SOURCE_FINGERPRINT: source_fingerprint, lineage.PIPELINE_DIGEST: config_hash}
    stored = [
        version
        for version in reversed(model_registry.model_versions(config.model_name, tags))  # newest first
        if version.tags.get(lineage.ADAPTER_URI)
        and storage.get_storage().is_complete(version.tags[lineage.ADAPTER_URI])
    ]
    if not stored:
        return None
    chosen = next((version for version in stored if CHAMPION in version.aliases), stored[0])
    alias = CHAMPION if CHAMPION in chosen.aliases else ""
    return Covering(config.model_name, chosen.version, alias, chosen.tags.get(lineage.DATASET_FINGERPRINT, ""))


def check(config: PipelineConfig, search: bool = False) -> ChangeCheck:
    """List the source and compare it, and the config, with the registered versions' lineage."""
    listing = listing_of(config)
    fingerprint, config_hash = digest(listing), config_digest(config, search)
    result = ChangeCheck(fingerprint, config_hash, len(listing), covering_version(config, fingerprint, config_hash))
    log.info("%s", result.describe())
    return result
