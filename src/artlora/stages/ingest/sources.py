"""Raw inputs for ingest: every file under a local folder or an s3:// prefix, with its caption and style label.

Layouts:
- style: images in sub-folders take the first folder's name as their style label (one sub-folder per style);
  images at the top level get the style "default".
- captions, most specific first: a sidecar named after the whole image name or its stem, with the suffix `.txt`
  or `.caption` (`cat.png` + `cat.png.txt`, else `cat.txt`), then a line of a `metadata.jsonl` in the image's
  folder or any folder above it (the Hugging Face imagefolder convention: `{"file_name": "cat.png", "text":
  "..."}`, file_name relative to the metadata file's folder; a "caption" key is read when there is no "text").
With `all_captions` (ingest.captions: all) an image keeps every caption besides the first: each of its sidecars,
one caption per non-empty line (SimpleTuner's multi-line caption files), and every metadata.jsonl entry naming it.
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
    more_captions: tuple[tuple[str, str], ...] = ()  # (caption, source) of its other captions (all_captions)
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


def list_source(
    source: str, allow_outside_links: bool = False, all_captions: bool = False, setting: str = "ingest.source"
) -> Listing:
    """Every input under the source, with captions from sidecars or metadata.jsonl (with `all_captions`, all of
    an image's captions). In a local folder a symbolic link that leads outside it (unless
    `allow_outside_links`), nowhere, or round in a loop is listed with its problem, never read. `setting` is
    the config setting that named the source, for the errors."""
    problems: dict[str, tuple[str, str]] = {}
    local = not storage.is_s3(source)
    entries = _local_entries(source, allow_outside_links, problems, setting) if local else _s3_entries(source, setting)
    sidecars = {name: uri for name, uri in entries.items() if PurePosixPath(name).suffix.lower() in CAPTION_SUFFIXES}
    metadata = {name: uri for name, uri in entries.items() if PurePosixPath(name).name == METADATA_NAME}
    inputs = sorted(name for name in entries if name not in sidecars and name not in metadata)
    notes: list[str] = []
    found = _metadata_captions(metadata, set(inputs), notes)
    chosen = _sidecar_choice(inputs, sidecars, all_captions)
    used = {sidecar for names in chosen.values() for sidecar in names}
    notes += [f"{name}: caption file with no input file of the same name" for name in sorted(set(sidecars) - used)]
    texts = dict(zip(sorted(used), _read_texts([sidecars[name] for name in sorted(used)]), strict=True))
    for image, names in chosen.items():
        from_sidecars = [
            (text, f"sidecar {PurePosixPath(name).suffix.lower()}")
            for name in names
            for text in _caption_lines(texts[name], all_captions)
        ]
        found[image] = from_sidecars + (found.get(image, []) if all_captions else [])
    files = [_source_file(name, entries[name], found.get(name, []), all_captions) for name in inputs]
    files += [SourceFile(name, str(Path(source) / name), problem=problem) for name, problem in problems.items()]
    return Listing(sorted(files, key=lambda file: file.name), notes)


def _source_file(name: str, uri: str, captions: list[tuple[str, str]], all_captions: bool) -> SourceFile:
    """The first caption is the one used alone; with `all_captions` the other distinct ones come along."""
    if not captions:
        return SourceFile(name, uri)
    first, *rest = captions
    seen, more = {first[0]}, []
    for text, source in rest if all_captions else ():
        if text not in seen:
            seen.add(text)
            more.append((text, source))
    return SourceFile(name, uri, *first, more_captions=tuple(more))


def _caption_lines(text: str, all_captions: bool) -> list[str]:
    """A caption file is one caption; with all captions, one per non-empty line."""
    if not all_captions:
        return [text]
    return [line for line in text.splitlines() if line.strip()] or [text]


def _sidecar_choice(inputs: list[str], sidecars: dict[str, str], every: bool = False) -> dict[str, list[str]]:
    """input name -> the sidecar caption files that belong to it, best first: one named after the whole input
    name (`cat.png.txt`) before one named after its stem (`cat.txt`), `.txt` before `.caption`; only the best
    unless `every`."""
    by_base: dict[str, list[str]] = {}  # what a sidecar is named after (its name without the caption suffix)
    for name in sorted(sidecars, key=lambda n: CAPTION_SUFFIXES.index(PurePosixPath(n).suffix.lower())):
        by_base.setdefault(str(PurePosixPath(name).with_suffix("")), []).append(name)
    chosen = {}
    for name in inputs:
        found = [s for b in dict.fromkeys((name, str(PurePosixPath(name).with_suffix("")))) for s in by_base.get(b, [])]
        if found:
            chosen[name] = found if every else found[:1]
    return chosen


def _metadata_captions(
    metadata: dict[str, str], inputs: set[str], notes: list[str]
) -> dict[str, list[tuple[str, str]]]:
    """input name -> [(caption, "metadata.jsonl"), ...] from every metadata file, the one used alone first: a
    deeper folder's file before a shallower one's, a later line before an earlier one."""
    captions: dict[str, list[tuple[str, str]]] = {}
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
            captions.setdefault(target, []).insert(0, (entry[1], METADATA_NAME))
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


def _local_entries(
    source: str, allow_outside: bool, problems: dict[str, tuple[str, str]], setting: str
) -> dict[str, str]:
    """name -> path of every file under the folder; the links that are not followed go into `problems`."""
    root = Path(source)
    if not root.is_dir():
        raise SourceError(f"{setting} {source!r} is not a folder (nor an s3:// prefix)")
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


def _s3_entries(source: str, setting: str) -> dict[str, str]:
    store = storage.get_storage()
    base = storage.parse_uri(source)[1].rstrip("/")
    entries: dict[str, str] = {}
    for uri in store.list(source):
        name = storage.parse_uri(uri)[1][len(base) :].lstrip("/")
        if not _hidden(name):
            entries[name] = uri
    if not entries:
        raise SourceError(f"nothing under {setting} {source!r} (give the prefix the images are under)")
    return entries


def _hidden(name: str) -> bool:
    """Dot-files and anything in a dot-folder (.git/, .ipynb_checkpoints/) are tool droppings, not inputs."""
    return any(part.startswith(".") for part in PurePosixPath(name).parts)
