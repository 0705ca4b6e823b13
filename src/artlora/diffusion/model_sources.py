"""Where a base model's files are, without loading them: a model reference resolved to a local folder or file
(an s3:// prefix downloaded once into the work folder, a hub id passed on), with pickle-based weights refused.

Kept apart from `loading`, which loads what these resolve, so that what needs only a base model's files (register's
record of them, `pipeline run --local`'s check before it starts) loads neither torch nor diffusers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from artlora.errors import ArtloraError
from artlora.io import settings, storage

SINGLE_FILE_SUFFIXES = (".safetensors",)
# Weights in pickle form: loading them can run code, so they are refused with advice on converting them.
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
CONVERT_SINGLE_FILE = (
    "convert it once, on a machine where you trust the file, with diffusers' "
    "scripts/convert_original_stable_diffusion_to_diffusers.py --checkpoint_path FILE --dump_path FOLDER "
    "--to_safetensors (add --pipeline_class_name StableDiffusionXLPipeline for SDXL), and give FOLDER"
)
CONVERT_FOLDER = (
    "re-save it once, on a machine where you trust the files: "
    "DiffusionPipeline.from_pretrained(FOLDER).save_pretrained(NEW_FOLDER, safe_serialization=True)"
)
# Written into a downloaded model folder last; a folder without it is a broken download and is fetched again.
DOWNLOAD_MARKER = ".artlora-download-complete"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelLoadError(ArtloraError):
    """A base model that cannot be found or loaded; the message names the reference and what to do."""


def is_single_file(ref: str) -> bool:
    return ref.lower().endswith(SINGLE_FILE_SUFFIXES)


def _check_local(ref: str, path: Path) -> str:
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"base model {ref!r} is a folder without model_index.json: give a diffusers pipeline folder "
                "(as written by save_pretrained) or a single .safetensors checkpoint"
            )
        check_weight_files(ref, path)
        return str(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"base model {ref!r} is a pickle-based checkpoint ({path.suffix}), which artlora does not load because "
            f"loading it can run code: {CONVERT_SINGLE_FILE}"
        )
    if not is_single_file(path.name):
        raise ModelLoadError(
            f"base model {ref!r} is a file but not a .safetensors checkpoint: give a single-file checkpoint or a "
            "diffusers pipeline folder"
        )
    return str(path)


def check_weight_files(ref: str, folder: Path) -> None:
    """Refuse a diffusers folder with a component whose weights are in pickle form only, naming the file. The
    safety checker is never loaded (nor checked)."""
    for part in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "safety_checker"):
        files = [f for f in part.iterdir() if f.is_file()]
        pickles = sorted(f for f in files if f.suffix.lower() in PICKLE_SUFFIXES)
        if pickles and not any(f.suffix.lower() == ".safetensors" for f in files):
            name = f"{ref.rstrip('/')}/{pickles[0].relative_to(folder).as_posix()}"
            raise ModelLoadError(
                f"base model {ref!r}: {name} is a pickle-based weights file, which artlora does not load because "
                f"loading it can run code; {CONVERT_FOLDER}"
            )


def _listing(store: storage.Storage, uri: str) -> list[tuple[str, int, str]]:
    """(uri, size, etag) of every object under a prefix, so a changed model at the same prefix differs."""
    return sorted((info.uri, info.size, info.etag) for info in store.objects(uri))


def _download_s3(uri: str) -> str:
    """Download a diffusers folder from S3 once per content; later calls reuse the finished download."""
    try:
        store = storage.get_storage()
        listing = _listing(store, uri)
        if not listing:
            raise ModelLoadError(
                f"base model {uri!r}: no objects under that prefix; upload a diffusers pipeline folder there "
                "(e.g. with Storage.upload_dir) or fix the URI"
            )
        identity = json.dumps([uri.rstrip("/"), listing]).encode()
        target = settings.work_dir() / "models" / hashlib.sha256(identity).hexdigest()[:16]
        if not (target / DOWNLOAD_MARKER).is_file():
            _fetch(store, uri, target)
    except storage.StorageError as err:
        raise ModelLoadError(f"cannot read base model {uri!r}: {err}") from err
    return str(target)


def _fetch(store: storage.Storage, uri: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Download beside the target and rename it into place, so neither a crash nor a concurrent run ever
    # leaves a half-written folder at the path that is reused.
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        store.download_dir(uri, staging)
        if not (staging / "model_index.json").is_file():
            raise ModelLoadError(
                f"base model {uri!r} has no model_index.json at its top level: upload a diffusers pipeline "
                "folder to that prefix (single-file checkpoints must be local files)"
            )
        check_weight_files(uri, staging)
        (staging / DOWNLOAD_MARKER).write_text(uri + "\n")
        if not (target / DOWNLOAD_MARKER).is_file():  # a concurrent run may have finished first
            shutil.rmtree(target, ignore_errors=True)  # what is left of an interrupted older download
            os.replace(staging, target)
    except OSError:
        if not (target / DOWNLOAD_MARKER).is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_reference(ref: str) -> None:
    """Fail fast, before a stage's work, on a reference that cannot load: a missing local path, a folder or an
    s3:// prefix without model_index.json, pickle-based weights, a single file whose header cannot be read.
    Nothing is downloaded; a hub id is checked when it loads."""
    if not storage.is_s3(ref):
        source = local_model_path(ref)
        if is_single_file(source):
            # Its header is read by the families' code, which loads torch and diffusers: only a single file pays.
            from artlora.diffusion import loading

            loading.readable_single_file_family(ref, source)
        return
    store = storage.get_storage()
    if store.exists(storage.join(ref, "model_index.json")):
        return
    if next(store.list(ref), None) is None:
        raise ModelLoadError(
            f"base model {ref!r}: no objects under that prefix (upload a diffusers pipeline folder there, "
            "or fix the URI)"
        )
    raise ModelLoadError(
        f"base model {ref!r} has no model_index.json at its top level (upload a diffusers pipeline folder to "
        "that prefix; single-file checkpoints must be local files)"
    )


def local_model_path(ref: str) -> str:
    """What diffusers should load for a reference: a local path, a downloaded S3 folder, or a hub id."""
    if storage.is_s3(ref):
        return _download_s3(ref)
    path = Path(ref).expanduser()
    if path.exists():
        return _check_local(ref, path)
    if _HUB_ID.match(ref) and not ref.lower().endswith(SINGLE_FILE_SUFFIXES + PICKLE_SUFFIXES):
        return ref
    raise ModelLoadError(
        f"base model {ref!r} not found: no such local file or folder, and it is not an s3:// URI or a hub id "
        "(org/name); check the path"
    )


def local_folder(ref: str) -> str:
    """A model folder that is not a pipeline (e.g. a CLIP model for evaluation): a local folder as it is, or an
    s3:// prefix downloaded once, with the same refusal of pickle-based weights. Never a hub id."""
    folder = Path(_download_s3(ref) if storage.is_s3(ref) else Path(ref).expanduser())
    check_weight_files(ref, folder)
    files = [f for f in folder.iterdir() if f.is_file()]
    pickles = sorted(f.name for f in files if f.suffix.lower() in PICKLE_SUFFIXES)
    if pickles and not any(f.suffix == ".safetensors" for f in files):
        raise ModelLoadError(
            f"model {ref!r}: {pickles[0]} is a pickle-based weights file, which artlora does not load because "
            "loading it can run code; re-save the model with save_pretrained(FOLDER, safe_serialization=True)"
        )
    return str(folder)
