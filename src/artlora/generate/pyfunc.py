"""The MLflow pyfunc flavour of a registered style: `mlflow.pyfunc.load_model("models:/NAME@champion")` loads the
base model with the adapter, and `.predict(prompts)` paints.

MLflow imports this module (the logged model's `loader_module`; artlora must be installed, as in its image) and
calls `_load_pyfunc` with the model's `data/adapter` folder. Nothing is unpickled. Loaded through the registry
(models:/NAME/VERSION or @alias), the version's files and its base model's are checked against the digests
registered with it before either is read, and the base is the one the version names, as `artlora generate` uses.

- input: prompts: a list of strings, one string, or a DataFrame with a `prompt` column;
- params (optional, with these defaults): negative_prompt "", strength 1.0, steps 25, guidance 7.5, seed 0
  (the i-th prompt is painted with seed + i);
- output: a list with one PNG file (bytes) per prompt, which records its prompt, seed, model and settings in its
  text chunks; `PIL.Image.open(io.BytesIO(png))` opens one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from artlora import contracts
from artlora.data import lineage
from artlora.diffusion import base_files
from artlora.diffusion.adapters import adapter_file, read_metadata
from artlora.generate import png
from artlora.generate.painting import Painter
from artlora.generate.settings import PARAMS, GenerateError, Settings

if TYPE_CHECKING:  # the registry (MLflow) is imported only when the model is loaded through it
    from artlora.io.model_registry import Version

# Written by MLflow beside a model it downloads as models:/NAME/VERSION or models:/NAME@alias.
REGISTERED_META = "registered_model_meta"


class StyleModel:
    """What `mlflow.pyfunc.load_model` returns (wrapped): the painter, and where its adapter came from."""

    def __init__(self, folder: Path, version: Version | None = None):
        adapter = adapter_file(folder)
        base_model = _base_model(adapter, version)
        if version is not None:
            base_files.verify(version.uri, base_model, version.tags.get(contracts.BASE_MANIFEST_TAG))
        self.painter = Painter(base_model, adapter)
        self.model = _registered_as(folder)
        self.base_model = base_model

    def predict(self, data, params: dict | None = None) -> list[bytes]:
        values = {**PARAMS, **(params or {})}
        seed = int(values.pop("seed"))
        settings = Settings(**values)
        described = {**asdict(settings), "base_model": self.base_model, "precision": self.painter.precision}
        images = []
        for offset, prompt in enumerate(_prompts(data)):
            image = self.painter.paint(prompt, seed + offset, settings)
            images.append(png.encode(image, png.text_chunks(prompt, seed + offset, self.model, described)))
        return images


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> StyleModel:
    folder = Path(data_path)
    return StyleModel(folder, _checked_version(folder))


def _checked_version(folder: Path) -> Version | None:
    """Loaded through the registry (models:/NAME/VERSION or @alias): the version, once the downloaded files are
    found to be its own, as its manifest records them, before anything in them is read; else None."""
    from artlora.io import model_registry

    registered = _registered_as(folder)
    if not registered.startswith("models:/"):
        return None
    name, number = registered.removeprefix("models:/").rsplit("/", 1)
    version = model_registry.model_version(name, number)
    if version is None:
        raise GenerateError(f"{registered} is not in the registry any more (load another version)")
    model_registry.verify_files(version, folder.parents[1])
    return version


def _base_model(adapter: Path, version: Version | None) -> str:
    """The base model the version names (its lineage tag, whose files were registered with it), else the one the
    adapter file records: a folder loaded directly, or a version registered without the tag."""
    named = version.tags.get(lineage.BASE_MODEL) if version is not None else None
    base_model = named or read_metadata(adapter).get(contracts.BASE_MODEL_METADATA)
    if not base_model:
        raise GenerateError(
            f"{adapter} records no base model (artlora.base_model) (register adapters trained by artlora)"
        )
    return base_model


def _prompts(data) -> list[str]:
    if isinstance(data, str):
        return [data]
    if hasattr(data, "columns"):  # MLflow passes a DataFrame after checking the input against the signature
        column = data["prompt"] if "prompt" in data.columns else data.iloc[:, 0]
        return [str(prompt) for prompt in column]
    return [str(prompt) for prompt in data]


def _registered_as(folder: Path) -> str:
    """`models:/NAME/VERSION` when MLflow loaded the model through the registry, else the adapter folder."""
    meta = folder.parents[1] / REGISTERED_META
    if meta.is_file():
        values = yaml.safe_load(meta.read_text()) or {}
        if "model_name" in values and "model_version" in values:
            return f"models:/{values['model_name']}/{values['model_version']}"
    return str(folder)
