"""A version's adapter files: fetched once into a local cache, then copied out in the layout asked for.

The cache is `ARTLORA_WORK_DIR/adapters/<hash of the version's source>/`: a source (the logged model) never
changes once registered, so a folder that finished downloading is reused as it is by every later `generate` and
`models download` of that version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from artlora.diffusion.adapters import adapter_file
from artlora.errors import writing
from artlora.io import model_registry, settings

DONE_MARKER = ".artlora-download-complete"  # written last: a folder without it is an interrupted download
LAYOUTS = ("diffusers", "kohya")


def adapter_folder(version: model_registry.Version) -> Path:
    """The local folder holding the version's adapter files, downloaded on first use."""
    target = settings.work_dir() / "adapters" / hashlib.sha256(version.source.encode()).hexdigest()[:16]
    if (target / DONE_MARKER).is_file():
        return target / "adapter"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded beside the target and renamed into place, so a crash or a concurrent download never leaves a
    # half-written folder where a finished one is expected.
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        folder = model_registry.download_version(version, staging / "download")
        os.replace(folder, staging / "adapter")
        (staging / DONE_MARKER).write_text(f"{version.uri} {version.source}\n")
        if not (target / DONE_MARKER).is_file():
            shutil.rmtree(target, ignore_errors=True)  # what an interrupted download left
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "adapter"


def download(version: model_registry.Version, out: str | Path, layout: str | None = None) -> list[Path]:
    """Copy the version's adapter into `out`: the file of one layout, or with none given every adapter file."""
    folder = adapter_folder(version)
    files = [adapter_file(folder, layout)] if layout else sorted(folder.glob("*.safetensors"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in files:
        with writing(out / path.name):
            copied.append(Path(shutil.copy2(path, out / path.name)))
    return copied
