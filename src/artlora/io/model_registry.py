"""The MLflow model registry as artlora uses it: an adapter logged as an MLflow Model, registered versions with
their tags and aliases, looked up and downloaded."""

from __future__ import annotations

import datetime
import logging
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import artlora
from artlora import contracts
from artlora.errors import ArtloraError
from artlora.io import manifest, tracking

log = logging.getLogger(__name__)

# The logged MLflow Model of an adapter: the adapter folder is its data, artlora (installed, as in the image) its
# code. Loading it calls `_load_pyfunc` of this module; nothing in it is unpickled.
PYFUNC_LOADER = "artlora.generate.pyfunc"
MODEL_NAME = "adapter_model"  # the logged model's name within the run
ADAPTER_DATA = "adapter"  # the adapter folder's name under the model's data/


class VersionFilesError(ArtloraError):
    """A version's files are not the ones it was registered with (its manifest)."""


@dataclass(frozen=True)
class Version:
    """A registered model version, as artlora reads it."""

    name: str
    version: str
    source: str  # where its files are: the logged model (models:/m-...) or, for older versions, an artifact folder
    run_id: str | None
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created: datetime.datetime  # UTC
    description: str = ""  # the model card (Markdown), shown on the version's MLflow page

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _version(entity: ModelVersion) -> Version:
    return Version(
        name=entity.name,
        version=str(entity.version),
        # MLflow requires a source to create a version; its entity types the field Optional (default None).
        source=entity.source,  # type: ignore[arg-type]
        run_id=entity.run_id or None,
        tags=dict(entity.tags or {}),
        aliases=tuple(sorted(entity.aliases or ())),
        created=datetime.datetime.fromtimestamp(entity.creation_timestamp / 1000, tz=datetime.UTC),
        description=entity.description or "",
    )


def registered_models() -> list[str]:
    """The names of every registered model, sorted."""
    tracking.configure()
    with tracking.asking("list registered models"):
        return sorted(model.name for model in tracking.pages(MlflowClient().search_registered_models))


def model_aliases(name: str) -> dict[str, str] | None:
    """A registered model's aliases (alias -> version), or None when there is no model of that name."""
    model = tracking.or_none(f"read model {name!r}", lambda: MlflowClient().get_registered_model(name))
    return None if model is None else {alias: str(version) for alias, version in (model.aliases or {}).items()}


def model_versions(name: str, tags: Mapping[str, str] | None = None) -> list[Version]:
    """Every version of a model (optionally only those carrying every one of `tags`), oldest first."""
    tracking.configure()
    # Model names and the tags searched by are artlora's own (letters, digits, `_.-`): nothing to escape.
    query = " and ".join([f"name = '{name}'", *(f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items())])
    with tracking.asking(f"list the versions of {name!r}"):
        found = tracking.pages(MlflowClient().search_model_versions, filter_string=query)
    # A search leaves the versions' aliases out; the model has them.
    aliases = model_aliases(name) or {}
    versions = [
        replace(_version(entity), aliases=tuple(sorted(a for a, v in aliases.items() if v == str(entity.version))))
        for entity in found
    ]
    return sorted(versions, key=lambda v: int(v.version))


def model_version(name: str, version: str) -> Version | None:
    entity = tracking.or_none(f"read {name} version {version}", lambda: MlflowClient().get_model_version(name, version))
    return None if entity is None else _version(entity)


def version_by_alias(name: str, alias: str) -> Version | None:
    entity = tracking.or_none(f"read {name}@{alias}", lambda: MlflowClient().get_model_version_by_alias(name, alias))
    return None if entity is None else _version(entity)


def log_adapter_model(folder: str | Path, params: Mapping[str, Any]) -> tuple[str, str]:
    """Log an adapter folder as an MLflow Model of the active run, loadable with `mlflow.pyfunc.load_model`;
    `params` are its predict() parameters with their defaults. Returns (source URI, logged model id)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    types = {str: "string", int: "long", float: "double", bool: "boolean"}
    signature = ModelSignature(
        inputs=Schema([ColSpec("string")]),  # unnamed: a list of prompts is accepted as it is
        params=ParamSchema([ParamSpec(key, types[type(value)], value) for key, value in params.items()]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / ADAPTER_DATA
        shutil.copytree(folder, data)
        with warnings.catch_warnings(), tracking.asking("log the adapter as an MLflow Model"):
            # Its advice, an input example, would make MLflow load the base model here to check it.
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                loader_module=PYFUNC_LOADER,
                data_path=str(data),
                signature=signature,
                pip_requirements=[f"artlora=={artlora.__version__}"],
            )
    return info.model_uri, info.model_id


def create_version(name: str, source: str, run_id: str, tags: Mapping[str, str], model_id: str | None) -> Version:
    """A new version of `name` (created if needed) from a logged model's URI."""
    tracking.configure()
    client = MlflowClient()
    try:
        client.create_registered_model(name, description="artlora style LoRA adapters")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with tracking.asking(f"register a version of {name!r}"):
        entity = client.create_model_version(
            name, source, run_id=run_id, tags={k: str(v) for k, v in tags.items()}, model_id=model_id
        )
    return _version(entity)


def delete_version(name: str, version: str) -> None:
    tracking.configure()
    with tracking.asking(f"delete {name} version {version}"):
        MlflowClient().delete_model_version(name, version)


def set_alias(name: str, alias: str, version: str) -> None:
    tracking.configure()
    with tracking.asking(f"set alias {alias!r} of {name!r} to version {version}"):
        MlflowClient().set_registered_model_alias(name, alias, version)


def set_description(name: str, version: str, text: str) -> None:
    """A version's description: what its MLflow page shows (rendered as Markdown)."""
    tracking.configure()
    with tracking.asking(f"describe {name} version {version}"):
        MlflowClient().update_model_version(name, version, description=text)


def set_version_tags(name: str, version: str, tags: Mapping[str, str]) -> None:
    tracking.configure()
    client = MlflowClient()
    with tracking.asking(f"tag {name} version {version}"):
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, str(value))


def download_version(version: Version, destination: str | Path) -> Path:
    """Download a version's files into `destination`; returns the adapter folder among them (the logged model's
    data, or the whole download for versions registered from a plain artifact folder)."""
    tracking.configure()
    Path(destination).mkdir(parents=True, exist_ok=True)
    with tracking.asking(f"download {version.uri} from {version.source}"):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(destination)))
    verify_files(version, local)
    logged = local / "data" / ADAPTER_DATA
    return logged if logged.is_dir() else local


def source_manifest(source: str) -> str:
    """The manifest (manifest.py, encoded) of a logged model's files as the artifact store holds them."""
    with tempfile.TemporaryDirectory() as tmp, tracking.asking(f"read back the files of {source}"):
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp)
        return manifest.encode(manifest.manifest(local, contracts.MLFLOW_DOWNLOAD_FILES))


def verify_files(version: Version, root: str | Path) -> None:
    """Refuse the version's files under `root` (its logged model, as downloaded) unless they are exactly those
    of the manifest it was registered with: none missing, none added, none changed. A version registered before
    artlora recorded manifests is used unchecked, with a warning."""
    recorded = version.tags.get(contracts.VERSION_MANIFEST_TAG)
    if recorded is None:
        log.warning("%s has no manifest of its files (registered by an older artlora): not checked", version.uri)
        return
    problems = manifest.differences(manifest.decode(recorded), manifest.manifest(root, contracts.MLFLOW_DOWNLOAD_FILES))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise VersionFilesError(
            f"{version.uri}: {problems[0]}{more}; its files are not those registered, so it is not used (someone "
            "wrote to the MLflow artifact store: check who holds its keys, and register the adapter again)"
        )
