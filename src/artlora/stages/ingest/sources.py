"""Raw inputs for ingest: every file under a local folder or an s3:// prefix, with its caption and style label.

Layouts:
- style: images in sub-folders take the first folder's name as their style label (one sub-folder per style);
  images at the top level get the style "default".
- captions, most specific first: a sidecar named after the whole image name or its stem, with the suffix `.txt`
  or `.caption` (`cat.png` + `cat.png.txt`, else `cat.txt`), then a line of a `metadata.jsonl` in the image's
  folder or any folder above it (the Hugging Face imagefolder convention: `{"file_name": "cat.png", "text":
  "..."}`, file_name relative to the metadata file's folder; a "caption" key is read when there is no "text").
Sidecars and metadata files are not inputs themselves. Hidden files and folders are skipped. What cannot be
used (a caption with no image, a bad metadata line) is listed in `Listing.notes`, never dropped silently.
"""

from __future__ import annotations

import errno
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from artlora.errors import ArtloraError
from artlora.io import storage

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
CAPTION_SUFFIXES = (".txt", ".caption")  # in order of precedence when an image has both
METADATA_NAME = "metadata.jsonl"
DEFAULT_STYLE = "default"
# Caption files are small; reading them from S3 is latency-bound, so many at once.
_CAPTION_READERS = 16


class SourceError(ArtloraError):
    """The dataset source cannot be read, or holds nothing to curate."""


@dataclass(frozen=True)
class SourceFile:
    name: str  # path relative to the source root, with forward slashes
    uri: str  # where to read it: an absolute local path or an s3:// URI
    caption: str = ""
    caption_source: str = ""  # "sidecar .txt", "sidecar .caption", "metadata.jsonl", or "" for none
    problem: tuple[str, str] | None = None  # (code, reason): a link that is not read (curation rejects it)

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

    def read(self) -> bytes:
        return read_uri(self.uri)


@dataclass(frozen=True)
class Listing:
    files: list[SourceFile]  # every input (image or not), sorted by name
    notes: list[str] = field(default_factory=list)  # caption files and metadata lines that could not be used


def read_uri(uri: str) -> bytes:
    return storage.get_storage().get_bytes(uri) if storage.is_s3(uri) else Path(uri).read_bytes()


def list_source(source: str, allow_outside_links: bool = False) -> Listing:
    """Every input under the source, with captions from sidecars or metadata.jsonl. In a local folder a symbolic
    link that leads outside it (unless `allow_outside_links`), nowhere, or round in a loop is listed with its
    problem, never read."""
    problems: dict[str, tuple[str, str]] = {}
    local = not storage.is_s3(source)
    entries = _local_entries(source, allow_outside_links, problems) if local else _s3_entries(source)
    sidecars = {name: uri for name, uri in entries.items() if PurePosixPath(name).suffix.lower() in CAPTION_SUFFIXES}
    metadata = {name: uri for name, uri in entries.items() if PurePosixPath(name).name == METADATA_NAME}
    inputs = sorted(name for name in entries if name not in sidecars and name not in metadata)
    notes: list[str] = []
    captions = _metadata_captions(metadata, set(inputs), notes)
    chosen = _sidecar_choice(inputs, sidecars)
    used = set(chosen.values())
    notes += [f"{name}: caption file with no input file of the same name" for name in sorted(set(sidecars) - used)]
    texts = _read_texts([sidecars[name] for name in chosen.values()])
    for (image, sidecar), text in zip(chosen.items(), texts, strict=True):
        captions[image] = (text, f"sidecar {PurePosixPath(sidecar).suffix.lower()}")
    files = [SourceFile(name, entries[name], *captions.get(name, ("", ""))) for name in inputs]
    files += [SourceFile(name, str(Path(source) / name), problem=problem) for name, problem in problems.items()]
    return Listing(sorted(files, key=lambda file: file.name), notes)


def _sidecar_choice(inputs: list[str], sidecars: dict[str, str]) -> dict[str, str]:
    """input name -> the sidecar caption file that belongs to it: one named after the whole input name
    (`cat.png.txt`) before one named after its stem (`cat.txt`), `.txt` before `.caption`."""
    by_base: dict[str, str] = {}  # what a sidecar is named after (its name without the caption suffix) -> it
    for name in sorted(sidecars, key=lambda n: CAPTION_SUFFIXES.index(PurePosixPath(n).suffix.lower())):
        by_base.setdefault(str(PurePosixPath(name).with_suffix("")), name)
    chosen = {}
    for name in inputs:
        base = next((b for b in (name, str(PurePosixPath(name).with_suffix(""))) if b in by_base), None)
        if base is not None:
            chosen[name] = by_base[base]
    return chosen


def _metadata_captions(metadata: dict[str, str], inputs: set[str], notes: list[str]) -> dict[str, tuple[str, str]]:
    """input name -> (caption, "metadata.jsonl") from every metadata file; a deeper folder's file wins."""
    captions: dict[str, tuple[str, str]] = {}
    names = sorted(metadata, key=lambda n: len(PurePosixPath(n).parts))  # shallow first, deeper overrides
    for name, raw in zip(names, _read_texts([metadata[n] for n in names]), strict=True):
        folder = PurePosixPath(name).parent
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            entry = _metadata_entry(line)
            where = f"{name} line {number}"
            if isinstance(entry, str):
                notes.append(f"{where}: {entry}")
                continue
            target = (folder / entry[0]).as_posix().removeprefix("./")
            if target not in inputs:
                notes.append(f"{where}: names {target}, which is not in the source")
                continue
            captions[target] = (entry[1], METADATA_NAME)
    return captions


def _metadata_entry(line: str) -> tuple[str, str] | str:
    """(file_name, caption) from one metadata.jsonl line, or what is wrong with it."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return "not valid JSON"
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
        return 'no "file_name" string'
    text = entry.get("text", entry.get("caption", ""))
    if not isinstance(text, str):
        return 'its "text" is not a string'
    return entry["file_name"], text


def _read_texts(uris: list[str]) -> list[str]:
    """UTF-8 text files (a byte-order mark dropped, undecodable bytes replaced), read concurrently."""
    if not uris:
        return []
    with ThreadPoolExecutor(min(_CAPTION_READERS, len(uris))) as pool:
        return [data.decode("utf-8-sig", errors="replace") for data in pool.map(read_uri, uris)]


def _local_entries(source: str, allow_outside: bool, problems: dict[str, tuple[str, str]]) -> dict[str, str]:
    """name -> path of every file under the folder; the links that are not followed go into `problems`."""
    root = Path(source)
    if not root.is_dir():
        raise SourceError(f"ingest.source {source!r} is not a folder (nor an s3:// prefix)")
    root = root.resolve()
    entries = {}
    for path in root.rglob("*"):
        name = path.relative_to(root).as_posix()
        if _hidden(name):
            continue
        problem = _link_problem(path, root, allow_outside) if path.is_symlink() else None
        if problem is not None:
            problems[name] = problem
        elif path.is_file():
            entries[name] = str(path)
    return entries


def _link_problem(link: Path, root: Path, allow_outside: bool) -> tuple[str, str] | None:
    """(code, reason) when a symbolic link is not to be read: a loop, a link to nothing, or one leaving the
    source folder without the config's consent; None for a link to a file that may be read."""
    try:
        target = link.resolve(strict=True)
    except RuntimeError:  # pathlib's word for a link loop (Python 3.11)
        return "link_loop", f"a symbolic link loop ({link.name} -> {link.readlink()})"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "link_loop", f"a symbolic link loop ({link.name} -> {link.readlink()})"
        return "broken_link", f"a symbolic link to nothing ({link.readlink()})"
    if not target.is_relative_to(root) and not allow_outside:
        return "outside_source", (
            f"a symbolic link to {target}, outside ingest.source (set ingest.allow_outside_links: true to read it)"
        )
    return None


def _s3_entries(source: str) -> dict[str, str]:
    store = storage.get_storage()
    base = storage.parse_uri(source)[1].rstrip("/")
    entries: dict[str, str] = {}
    for uri in store.list(source):
        name = storage.parse_uri(uri)[1][len(base) :].lstrip("/")
        if not _hidden(name):
            entries[name] = uri
    if not entries:
        raise SourceError(f"nothing under ingest.source {source!r} (give the prefix the images are under)")
    return entries


def _hidden(name: str) -> bool:
    """Dot-files and anything in a dot-folder (.git/, .ipynb_checkpoints/) are tool droppings, not inputs."""
    return any(part.startswith(".") for part in PurePosixPath(name).parts)
