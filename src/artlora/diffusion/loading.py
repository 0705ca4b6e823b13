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

Resolving a reference to its files (and refusing pickle-based weights) is `model_sources`, which loads neither torch
nor diffusers; this module loads what it resolves.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from safetensors import safe_open

from artlora.diffusion import families
from artlora.diffusion.model_sources import CONVERT_FOLDER, ModelLoadError, is_single_file, local_model_path

# The class name and the tensors' dtypes already cover `architectures` and `dtype`.
_CONFIG_PROVENANCE = frozenset({"architectures", "dtype", "torch_dtype", "transformers_version"})


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


def readable_single_file_family(ref: str, source: str) -> families.Family:
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
    family = readable_single_file_family(ref, source)
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
    if is_single_file(source):
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
