"""Ingest and curate: raw images in, a versioned dataset out, with every input file accounted for.

The dataset version lives under `<storage_root>/datasets/<fingerprint>/`: `manifest.json` (every accepted
image with its caption, style and split) and the completion marker, written last; beside them
`reports/<hash>.json`, one per distinct ingest (every input file, accepted or rejected with a reason).
Accepted images are stored once, by content hash, under `<storage_root>/datasets/blobs/`, so versions share
unchanged images and a re-ingest uploads only new ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from dataclasses import asdict, dataclass

from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from artlora import storage, tracking
from artlora.config import IngestConfig
from artlora.sources import SourceFile, list_source

log = logging.getLogger(__name__)

# Bumped when curation logic changes, so datasets curated by older code get new fingerprints.
CURATION_VERSION = 1


@dataclass(frozen=True)
class Item:
    """One accepted image."""

    sha256: str
    source: str
    file: str
    caption: str
    style: str
    width: int
    height: int
    split: str = "train"


@dataclass(frozen=True)
class IngestResult:
    dataset_uri: str
    fingerprint: str
    accepted: int
    rejected: int
    reused: bool
    report_uri: str


def inspect(file: SourceFile, data: bytes, min_size: int) -> tuple[int, int] | str:
    """Decode and verify one image: its size, or the reason it is rejected."""
    if not data:
        return "empty file (0 bytes)"
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # catches truncated and corrupt files that open() alone accepts
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = ImageOps.exif_transpose(image).size
    except UnidentifiedImageError:  # its message holds a memory address; the report must be reproducible
        return "unreadable image: not in a format Pillow can decode"
    except Exception as err:  # noqa: BLE001 - any decoder failure is a rejection, never a crash
        return f"unreadable image: {type(err).__name__}: {err}"
    if min(width, height) < min_size:
        return f"too small: {width}x{height} px, the minimum side is {min_size} px (ingest.min_size)"
    return width, height


def curate(
    files: list[SourceFile], config: IngestConfig, store: storage.Storage
) -> tuple[list[Item], list[dict[str, str]]]:
    """Accepted items (first of each exact duplicate kept, its bytes stored) and rejections with reasons."""
    blobs = storage.join(config.storage_root, "datasets", "blobs")
    accepted: list[Item] = []
    rejected: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    for file in tqdm(files, desc="ingest", unit="img", mininterval=1.0):
        if not file.is_image:
            rejected.append({"file": file.name, "reason": f"not an image file ({file.suffix or 'no extension'})"})
            continue
        data = file.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            rejected.append({"file": file.name, "reason": f"exact duplicate of {seen[digest]}"})
            continue
        outcome = inspect(file, data, config.min_size)
        if isinstance(outcome, str):
            rejected.append({"file": file.name, "reason": outcome})
            continue
        seen[digest] = file.name
        blob = storage.join(blobs, f"{digest}{file.suffix.lower()}")
        if not store.exists(blob):
            store.put_bytes(blob, data)
        accepted.append(Item(digest, file.name, blob, file.caption, file.style, *outcome))
    return accepted, rejected


def split(items: list[Item], val_fraction: float, seed: int) -> list[Item]:
    """Stratified by style and decided by content hash, so it is the same on every run and machine."""
    out: list[Item] = []
    for style in sorted({item.style for item in items}):
        group = [item for item in items if item.style == style]
        group.sort(key=lambda item: hashlib.sha256(f"{seed}:{item.sha256}".encode()).hexdigest())
        # Round half up, and keep at least one image of every style for training.
        n_val = min(math.floor(len(group) * val_fraction + 0.5), len(group) - 1)
        out += [Item(**{**asdict(item), "split": "val" if i < n_val else "train"}) for i, item in enumerate(group)]
    return sorted(out, key=lambda item: item.source)


def fingerprint(items: list[Item], config: IngestConfig) -> str:
    """Hash of the accepted content, file names, captions, styles, split and curation settings.

    Rejected files are not part of it: adding a broken file to the source does not make a new dataset. The
    report of each ingest is stored beside the version under its own hash, so every input is accounted for.
    """
    settings = {"curation_version": CURATION_VERSION, **config.model_dump(exclude={"source", "experiment"})}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for item in sorted(items, key=lambda item: item.sha256):
        digest.update(f"{item.sha256}\0{item.source}\0{item.caption}\0{item.style}\0{item.split}\n".encode())
    return digest.hexdigest()[:24]


def report(files: list[SourceFile], items: list[Item], rejected: list[dict[str, str]]) -> dict:
    by_style: dict[str, dict[str, int]] = {}
    for item in items:
        counts = by_style.setdefault(item.style, {"train": 0, "val": 0})
        counts[item.split] += 1
    return {
        "inputs": len(files),
        "accepted": len(items),
        "rejected": len(rejected),
        "by_style": by_style,
        "accepted_files": sorted(item.source for item in items),
        "rejections": sorted(rejected, key=lambda r: r["file"]),
    }


def run(config: IngestConfig) -> IngestResult:
    files = list_source(config.source)
    if not any(file.is_image for file in files):
        raise ValueError(f"no image files under ingest.source={config.source!r}")
    store = storage.get_storage()
    items, rejected = curate(files, config, store)
    if not items:
        raise ValueError(f"every image under {config.source} was rejected; see the reasons above: {rejected[:5]}")
    items = split(items, config.val_fraction, config.seed)
    fp = fingerprint(items, config)
    dataset_uri = storage.join(config.storage_root, "datasets", fp)
    summary = report(files, items, rejected)
    report_bytes = json.dumps(summary, indent=2, sort_keys=True).encode()
    report_uri = storage.join(dataset_uri, "reports", f"{hashlib.sha256(report_bytes).hexdigest()[:16]}.json")
    with tracking.stage_run("ingest", config, tags={"artlora.dataset_fingerprint": fp}):
        if not store.exists(report_uri):  # named by its content: an existing one is this very report
            store.put_bytes(report_uri, report_bytes, content_type="application/json")
        reused = _write_dataset(store, dataset_uri, items)
        tracking.log_metrics({"inputs": len(files), "accepted": len(items), "rejected": len(rejected)})
        tracking.log_bytes(report_bytes, "curation/report.json")
    log.info(
        "dataset %s: %d accepted, %d rejected%s",
        dataset_uri,
        len(items),
        len(rejected),
        " (already stored)" if reused else "",
    )
    return IngestResult(dataset_uri, fp, len(items), len(rejected), reused, report_uri)


def _write_dataset(store: storage.Storage, dataset_uri: str, items: list[Item]) -> bool:
    """Write the dataset version unless a complete one with this fingerprint exists. Returns reused."""
    if store.is_complete(dataset_uri):
        return True
    store.put_json(storage.join(dataset_uri, "manifest.json"), {"items": [asdict(item) for item in items]})
    store.mark_complete(dataset_uri, {"items": len(items)})
    return False


def load_manifest(dataset_uri: str) -> list[Item]:
    store = storage.get_storage()
    if not store.is_complete(dataset_uri):
        raise ValueError(f"{dataset_uri} is not a complete dataset version; run the ingest stage first")
    return [Item(**entry) for entry in store.get_json(storage.join(dataset_uri, "manifest.json"))["items"]]
