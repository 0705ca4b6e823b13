"""Warm start (`train.init_from`): the adapter's first weights are those of a trained adapter, not zero.

The parent is a registered version (`models:/NAME@ALIAS`, `models:/NAME/VERSION`), downloaded afresh and checked
against the manifest registered with it (`model_registry.verify_files`) before anything in it is read, or an
adapter folder (s3:// or local) written by the train stage. Its diffusers-layout file is read as it is: its keys
are the train stage's own `<component>.<peft key>` (`lora.save_adapter`), what `lora.load_adapter_state` takes.

The parent must have the run's shape: the same base model, rank, alpha, target modules, DoRA and text-encoder
setting (what its file's provenance records), else the run stops before the base model is loaded, in one line
naming what differs. Only the weights are taken: the optimizer and the LR schedule start fresh.

The parent's content digest (`adapters.adapter_digest`) goes into the run's key, so that another parent is
another run, and, with the version it came from, into the training run's tags, which register copies to the
version's lineage.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from artlora import contracts
from artlora.config import TrainConfig
from artlora.diffusion.adapters import adapter_digest, adapter_file, read_metadata
from artlora.io import model_registry, storage
from artlora.registry import references
from artlora.stages.train.errors import TrainError

log = logging.getLogger(__name__)

# What makes two adapters the same shape on the same base: the train settings a parent must share with the run.
SHAPE = ("base_model", "rank", "alpha", "target_modules", "use_dora", "train_text_encoder")


@dataclass(frozen=True)
class Parent:
    """The adapter a run starts from."""

    reference: str  # models:/NAME/VERSION (the alias resolved) or the folder as given
    digest: str  # its content digest (adapters.adapter_digest)
    state: dict[str, torch.Tensor]  # `<component>.<peft key>` -> weights, as lora.load_adapter_state takes them
    settings: dict  # the train config it was trained with (its file's provenance)

    @property
    def tags(self) -> dict[str, str]:
        """The training run's tags that name it (register copies them to the version's lineage)."""
        return {contracts.INIT_FROM_TAG: self.reference, contracts.INIT_FROM_DIGEST_TAG: self.digest}


def resolve(config: TrainConfig) -> Parent | None:
    """The run's parent (None for a cold start), its files checked and its shape compared with the run's."""
    if config.init_from is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        reference, folder = _fetch(config.init_from, Path(tmp))
        path = adapter_file(folder)
        settings = json.loads(read_metadata(path).get(contracts.CONFIG_METADATA, "null") or "null")
        if not isinstance(settings, dict):
            raise TrainError(
                f"train.init_from {reference}: its adapter file records no train config (artlora.config), so its "
                "shape cannot be checked (start from an adapter trained by artlora)"
            )
        check_shape(reference, settings, config)
        parent = Parent(reference, adapter_digest(folder), load_file(path), settings)
    log.info("starting from %s (adapter %s)", parent.reference, parent.digest[:12])
    return parent


def _fetch(init_from: str, tmp: Path) -> tuple[str, Path]:
    """(the parent's name, a local folder holding its adapter files)."""
    if references.is_registered(init_from):
        version = references.resolve(init_from)
        # Downloaded afresh, not from the adapter cache: the manifest check covers the whole logged model.
        return version.uri, model_registry.download_version(version, tmp / "version")
    if storage.is_s3(init_from):
        if not storage.get_storage().is_complete(init_from):
            raise TrainError(
                f"train.init_from {init_from} is not a finished adapter folder (give a train run's adapter/ folder "
                "or a registered version, models:/NAME@ALIAS)"
            )
        storage.get_storage().download_dir(init_from, tmp / "adapter")
        return init_from, tmp / "adapter"
    folder = Path(init_from)
    if not folder.is_dir():
        raise TrainError(
            f"train.init_from {init_from} is neither a registered version (models:/NAME@ALIAS, models:/NAME/VERSION) "
            "nor an adapter folder"
        )
    return init_from, folder


def check_shape(reference: str, parent: dict, config: TrainConfig) -> None:
    """Refuse a parent of another base or shape, naming every setting that differs."""
    ours = config.model_dump(mode="json")
    differ = [
        f"{name} {parent.get(name)!r} (this run: {ours[name]!r})"
        for name in SHAPE
        if _same(name, parent.get(name)) != _same(name, ours[name])
    ]
    if differ:
        raise TrainError(
            f"train.init_from {reference} was trained with {', '.join(differ)}: a warm start needs the same base "
            "model and adapter shape (start from a matching adapter, or set init_from: null)"
        )


def _same(name: str, value: object) -> object:
    """A setting as compared: the target modules as a list, alpha as a float (a JSON config may hold 16 or 16.0)."""
    if name == "target_modules" and isinstance(value, list | tuple):
        return list(value)
    if name == "alpha" and isinstance(value, int | float):
        return float(value)
    return value
