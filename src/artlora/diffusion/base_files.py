"""The base model a version names, checked by its files: registration records a manifest of the base's weight and
config files ({relative path: sha256}), and every use of the version compares the base's files with it first.

A version's own files are checked by the manifest of its logged model (`io.model_registry.verify_files`); its
adapter paints as intended only on the base it was trained on, so the base is checked the same way. Which files:
those a load reads or could be made to read (weights in any form, configs, tokenizer files) under the folder the
reference resolves to (`model_sources.local_model_path`: a local folder, an s3:// prefix's download, a hub id's local
snapshot), or the one file of a single-file checkpoint. A safety checker is never loaded, so never checked.
"""

from __future__ import annotations

import logging
from pathlib import Path

from artlora.diffusion import model_sources
from artlora.errors import ArtloraError
from artlora.io import manifest

log = logging.getLogger(__name__)

# Weights (the pickle forms too: refused when they are all a component has, and a planted one must show as extra),
# configs and tokenizer files; documentation, git attributes and download markers are not read by a load.
BASE_FILE_SUFFIXES = (".safetensors", ".json", ".txt", ".model", *model_sources.PICKLE_SUFFIXES)
NOT_LOADED = frozenset({"safety_checker"})


class BaseModelFilesError(ArtloraError):
    """A version's base model is not the one it was registered with (its files differ from the recorded manifest)."""


def base_manifest(ref: str) -> dict[str, str]:
    """{relative path: sha256} of the files of base model `ref` that a load reads, as this machine has them."""
    source = Path(_local_source(ref))
    if source.is_file():  # a single-file checkpoint
        return manifest.digests(source.parent, [source])
    return manifest.digests(source, [path for path in source.rglob("*") if _is_loaded(path.relative_to(source))])


def _local_source(ref: str) -> str:
    """Where the reference's files are here: `model_sources.local_model_path`, with a hub id resolved to its local
    snapshot as diffusers' from_pretrained fetches it (safetensors only, as artlora loads)."""
    source = model_sources.local_model_path(ref)
    if Path(source).exists():
        return source
    from diffusers import DiffusionPipeline

    try:
        return str(DiffusionPipeline.download(ref, use_safetensors=True))
    except Exception as err:  # noqa: BLE001 - unreachable hub, unknown id: the same advice
        raise model_sources.ModelLoadError(
            f"base model {ref!r}: cannot fetch the hub model's files to check them ({type(err).__name__}: {err}); "
            "check that the hub is reachable, or point base_model at a local or s3:// copy"
        ) from err


def _is_loaded(relative: Path) -> bool:
    hidden = any(part.startswith(".") for part in relative.parts)  # download markers, a hub download's .cache/
    return not hidden and relative.suffix.lower() in BASE_FILE_SUFFIXES and not NOT_LOADED & set(relative.parts)


def recorded_text(ref: str) -> str:
    """The base's manifest as a version tag's value (`manifest.encode`)."""
    return manifest.encode(base_manifest(ref))


def verify(owner: str, ref: str, recorded: str | None) -> None:
    """Refuse base model `ref` of `owner` (a version's URI) unless its files are exactly those `recorded` at
    registration: none missing, none added, none changed. A version registered before artlora recorded its base's
    digests (`recorded` None) keeps working, with a warning."""
    if recorded is None:
        log.warning(
            "%s records no digest of its base model %s (registered by an older artlora): not checked",
            owner,
            ref,
        )
        return
    problems = manifest.differences(manifest.decode(recorded), base_manifest(ref))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BaseModelFilesError(
            f"{owner}: base model {ref}: {problems[0]}{more}; the base model is not the one this version was "
            "registered with, so it is not used (restore the base model's files, or train and register the adapter "
            "again on the base as it is now)"
        )
