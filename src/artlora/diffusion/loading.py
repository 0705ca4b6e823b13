"""Base-model loading: the one place that turns a model reference into a pipeline of one of the families.

A reference is a local diffusers folder, a local single-file `.safetensors` checkpoint, an `s3://bucket/prefix`
holding a diffusers folder (downloaded once into the work folder), or a Hugging Face hub id (`org/name`). Tests
and the demo load the tiny pipelines of `artlora.demo.tiny` through the same paths.

Weights load from safetensors only (`use_safetensors=True`): pickle-based files (`.ckpt`, `.bin`, `.pt`,
`.pth`) can run code when loaded, so they are refused with an error that names the file and how to convert it.

A single file in the original (ldm/SGM) layout holds weights only. Its family is told from its tensor names, read
from the header alone (each family's `owns_single_file`: SDXL by its second text encoder's); diffusers then takes the
configs and tokenizer(s) from the folder holding the file when that has a model_index.json (a copy of the base
model's diffusers folder, weights optional), and otherwise fetches those of the matching public model from the
Hugging Face hub, which fails where the hub is unreachable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from safetensors import safe_open

from artlora.diffusion import families
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
# The class name and the tensors' dtypes already cover `architectures` and `dtype`.
_CONFIG_PROVENANCE = frozenset({"architectures", "dtype", "torch_dtype", "transformers_version"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelLoadError(ArtloraError):
    """A base model that cannot be found or loaded; the message names the reference and what to do."""


# -- resolving references -------------------------------------------------------------------------------


def _is_single_file(ref: str) -> bool:
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
    if not _is_single_file(path.name):
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
        if _is_single_file(source):
            _readable_single_file_family(ref, source)
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


def _family(source: str, revision: str | None) -> families.Family:
    """The family whose pipeline a folder's or hub id's model_index.json names; Stable Diffusion 1.x/2.x when no
    family claims it (a model_index.json that cannot be read is left for from_pretrained to report)."""
    index = Path(source) / "model_index.json"
    try:
        if index.is_file():
            name = json.loads(index.read_text()).get("_class_name", "")
        else:
            name = DiffusionPipeline.load_config(source, revision=revision).get("_class_name", "")
    except Exception:  # noqa: BLE001 - unreadable or unreachable: from_pretrained gives the real error below
        name = ""
    return families.for_pipeline_name(str(name))


def checkpoint_keys(path: str | Path) -> list[str]:
    """The tensor names of a single-file .safetensors checkpoint, from its header alone."""
    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def single_file_family(path: str | Path) -> families.Family:
    """The family of an original-layout checkpoint, told from its tensor names (e.g. SDXL's second text encoder)."""
    return families.for_single_file(checkpoint_keys(path))


def single_file_class(path: str | Path) -> type[DiffusionPipeline]:
    """The pipeline class that loads an original-layout checkpoint."""
    return single_file_family(path).pipeline_class()


def _single_file_config(ref: str, source: str, family: families.Family) -> str | None:
    """The diffusers folder holding the file, when it has a model_index.json of the file's architecture."""
    folder = Path(source).parent
    if not (folder / "model_index.json").is_file():
        return None
    if _family(str(folder), None) is not family:
        cls = family.pipeline_class()
        raise ModelLoadError(
            f"base model {ref!r} is a {cls.__name__} checkpoint, but the diffusers folder beside it "
            f"({folder}/model_index.json) is not: put the file beside its own model's configs"
        )
    return str(folder)


def _readable_single_file_family(ref: str, source: str) -> families.Family:
    """`single_file_family`, with an unreadable file reported as a ModelLoadError naming it."""
    try:
        return single_file_family(source)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ModelLoadError(
            f"base model {ref!r}: cannot read the tensor names of this checkpoint ({type(err).__name__}: {err}); "
            "give an intact .safetensors file"
        ) from err


def _load_single_file(
    ref: str, source: str, revision: str | None, torch_dtype: torch.dtype, text: families.TextOptions
):
    family = _readable_single_file_family(ref, source)
    cls = family.pipeline_class()
    config = _single_file_config(ref, source, family)
    options = dict(
        config=config, revision=revision, dtype=torch_dtype, use_safetensors=True, **family.load_options(text)
    )
    try:
        pipe = cls.from_single_file(source, **options)
    except Exception as err:
        where = (
            f"configs from {config}"
            if config
            else "no diffusers folder beside it, so diffusers looked for the configs on the Hugging Face hub. "
            "Without the hub, put the file in a folder holding its model's diffusers configs and tokenizer(s): "
            "model_index.json and the component folders as save_pretrained writes them, weights optional"
        )
        raise ModelLoadError(
            f"could not load single-file base model {ref!r} as {cls.__name__} ({where}): {type(err).__name__}: {err}"
        ) from err
    # diffusers builds each component on the meta device and fills in the weights it finds; the rest stay empty
    # without an error (e.g. SDXL's two text encoders, which it tells apart by width alone, at one width).
    empty = [name for name, part in pipe.components.items() if isinstance(part, torch.nn.Module) and _has_meta(part)]
    if empty:
        raise ModelLoadError(
            f"single-file base model {ref!r}: diffusers found no weights for part of {', '.join(empty)}; the "
            f"checkpoint does not hold a complete {cls.__name__} in the original layout"
        )
    return pipe


def _has_meta(module: torch.nn.Module) -> bool:
    return any(tensor.is_meta for tensor in (*module.parameters(), *module.buffers()))


def load_pipeline(
    ref: str,
    revision: str | None = None,
    torch_dtype: torch.dtype = torch.float32,
    text: families.TextOptions | None = None,
) -> Any:
    """Load the pipeline of any family (`diffusion.families`), without safety checker, from any reference above;
    `text` may leave out an encoder the captions will not use (SD 3.5's T5 with `t5=False`)."""
    source, text = local_model_path(ref), text or families.TextOptions()
    if _is_single_file(source):
        return _load_single_file(ref, source, revision, torch_dtype, text)
    # diffusers deprecated `torch_dtype` for `dtype`; the parameter keeps the name the ecosystem knows.
    try:
        family = _family(source, revision)
        options = dict(revision=revision, dtype=torch_dtype, use_safetensors=True, **family.load_options(text))
        return family.pipeline_class().from_pretrained(source, **options)
    except Exception as err:
        known = ", ".join(family.label for family in families.FAMILIES.values())
        raise ModelLoadError(
            f"could not load base model {ref!r} (from {source}): {type(err).__name__}: {err}. Check that it "
            f"is a pipeline of a known family ({known}) with .safetensors weights (for others, "
            f"{CONVERT_FOLDER}), and for a hub id that the hub is reachable and the revision exists"
        ) from err


# -- identity -------------------------------------------------------------------------------------------


def _config_json(module: torch.nn.Module) -> str:
    config = getattr(module, "config", None)
    if config is None:
        return "null"
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    # These keys record provenance (where it was loaded from, which library wrote it, `architectures` and
    # `dtype` which save_pretrained fills in): they differ between a built and a loaded copy of one model.
    values = {k: v for k, v in values.items() if not k.startswith("_") and k not in _CONFIG_PROVENANCE}
    return json.dumps(values, sort_keys=True, default=str)


def module_fingerprint(module: torch.nn.Module) -> str:
    """A sha256 hex digest of a module's class, config and weights; equal modules give equal digests."""
    digest = hashlib.sha256()
    digest.update(type(module).__name__.encode())
    digest.update(_config_json(module).encode())
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"\n{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        # A uint8 view hashes the raw bytes of any dtype (bfloat16 included) without copying them.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
