"""A curated dataset version, as ingest writes it and augment reads it.

`<storage_root>/datasets/<fingerprint>/manifest.json` holds every accepted image (`Item`) and the background
colour transparent images were composited on; the version's completion marker is written after it, so a version
without one is never read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from artlora.data.images import RGB
from artlora.errors import ArtloraError
from artlora.io import storage

MANIFEST = "manifest.json"


class DatasetError(ArtloraError):
    """A dataset version that is not there, not whole, or of a format this artlora does not read."""


@dataclass(frozen=True, kw_only=True)
class Item:
    """One accepted image."""

    sha256: str
    source: str  # path relative to ingest.source
    file: str  # s3:// URI of the original bytes in the blob store
    caption: str
    style: str
    width: int  # upright (EXIF-transposed) size in pixels
    height: int
    bucket: tuple[int, int]  # (width, height) of its training bucket in pixels, multiples of 64
    split: str = "train"
    # Written to the manifest only when not at these defaults, so versions made before them read the same.
    more_captions: tuple[str, ...] = ()  # its other captions (ingest.captions: all)
    repeats: int = 1  # times a training view of it is seen per epoch (ingest.style_repeats)
    loss_weight: float = 1.0  # weight of its views in the training loss (ingest.style_loss_weights)


OPTIONAL_FIELDS = {"more_captions": (), "repeats": 1, "loss_weight": 1.0}


def item_record(item: Item) -> dict:
    """An item as the manifest holds it: the optional fields only where they are not at their default."""
    record = asdict(item)
    return {name: value for name, value in record.items() if OPTIONAL_FIELDS.get(name, object()) != value}


def fingerprint_of(dataset_uri: str) -> str:
    """A version's fingerprint: the last segment of its URI."""
    return dataset_uri.rstrip("/").rsplit("/", 1)[-1]


def write(store: storage.Storage, dataset_uri: str, items: list[Item], background: RGB) -> bool:
    """Write a dataset version unless a complete one is there already (same fingerprint, same content).
    Returns whether the stored one was reused."""
    if store.is_complete(dataset_uri):
        return True
    manifest = {"background": list(background), "items": [item_record(item) for item in items]}
    store.put_json(storage.join(dataset_uri, MANIFEST), manifest)
    store.mark_complete(dataset_uri, {"items": len(items)})
    return False


def load_items(dataset_uri: str) -> list[Item]:
    manifest = _manifest(dataset_uri)
    return [
        Item(**{**entry, "bucket": tuple(entry["bucket"]), "more_captions": tuple(entry.get("more_captions", ()))})
        for entry in manifest["items"]
    ]


def load_background(dataset_uri: str) -> RGB:
    """The colour the dataset's transparent images were measured on; decode them on it too (`images.open_rgb`)."""
    return tuple(_manifest(dataset_uri)["background"])


def _manifest(dataset_uri: str) -> dict:
    store = storage.get_storage()
    if not store.is_complete(dataset_uri):
        raise DatasetError(f"{dataset_uri} is not a complete dataset version (run the ingest stage first)")
    manifest = store.get_json(storage.join(dataset_uri, MANIFEST))
    if "background" not in manifest:
        raise DatasetError(
            f"{dataset_uri} was curated by an older artlora, with no buckets (run the ingest stage again)"
        )
    return manifest
