"""Raw inputs for ingest: every file under a local folder or an s3:// prefix, with sidecar captions.

Images in sub-folders take the first folder's name as their style label; images at the top level get the
style "default". A caption comes from the `.txt` file beside the image with the same stem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from artlora import storage

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
CAPTION_SUFFIXES = frozenset({".txt"})
DEFAULT_STYLE = "default"


@dataclass(frozen=True)
class SourceFile:
    name: str  # path relative to the source root, with forward slashes
    read: Callable[[], bytes] = field(repr=False, compare=False)
    caption: str = ""

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix.lower()

    @property
    def is_image(self) -> bool:
        return self.suffix in IMAGE_SUFFIXES

    @property
    def style(self) -> str:
        parts = PurePosixPath(self.name).parts
        return parts[0] if len(parts) > 1 else DEFAULT_STYLE


def list_source(source: str) -> list[SourceFile]:
    """All files under the source except caption sidecars, which become their image's caption."""
    readers = _s3_readers(source) if storage.is_s3(source) else _local_readers(source)
    captions = {}
    for name, read in readers.items():
        if PurePosixPath(name).suffix.lower() in CAPTION_SUFFIXES:
            captions[str(PurePosixPath(name).with_suffix(""))] = read
    files = []
    for name, read in sorted(readers.items()):
        if PurePosixPath(name).suffix.lower() in CAPTION_SUFFIXES:
            continue
        caption_reader = captions.get(str(PurePosixPath(name).with_suffix("")))
        caption = caption_reader().decode("utf-8", errors="replace").strip() if caption_reader else ""
        files.append(SourceFile(name, read, caption))
    return files


def _local_readers(source: str) -> dict[str, Callable[[], bytes]]:
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"ingest.source {source!r} is not a folder (nor an s3:// prefix)")
    return {
        path.relative_to(root).as_posix(): path.read_bytes
        for path in root.rglob("*")
        if path.is_file() and not _hidden(path.relative_to(root).as_posix())
    }


def _s3_readers(source: str) -> dict[str, Callable[[], bytes]]:
    store = storage.get_storage()
    base = storage.parse_uri(source)[1].rstrip("/")
    readers: dict[str, Callable[[], bytes]] = {}
    for uri in store.list(source):
        name = storage.parse_uri(uri)[1][len(base) :].lstrip("/")
        if not _hidden(name):
            readers[name] = lambda uri=uri: store.get_bytes(uri)
    if not readers:
        raise FileNotFoundError(f"nothing under ingest.source {source!r}")
    return readers


def _hidden(name: str) -> bool:
    """Dot-files and anything in a dot-folder (.git/, .ipynb_checkpoints/) are tool droppings, not inputs."""
    return any(part.startswith(".") for part in PurePosixPath(name).parts)
