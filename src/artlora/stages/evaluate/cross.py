"""Cross-evaluation: any adapter (a folder, or a registered `models:/NAME/VERSION` / `models:/NAME@alias`) on any
dataset version's latent cache, without the training run.

It is what `evaluate` does when no `run_id` is given. A registered version's files are checked against the
manifest registered with it and its base model's files against the base's recorded digests, as `generate` does
(`registry.files`, `diffusion.base_files`). The results go to a folder of their own,
`<storage_root>/evaluations/<key>/` (the key hashes the adapter's content digest, the cache and the evaluation
settings), so the adapter's own `<run>/eval/` report is never overwritten, and to an MLflow run of their own,
tagged with the adapter and the dataset fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from artlora import contracts
from artlora.config import EvaluateConfig
from artlora.data import lineage
from artlora.diffusion import base_files, families
from artlora.diffusion.adapters import DIFFUSERS_FILE, adapter_digest, adapter_file, read_metadata
from artlora.errors import ArtloraError
from artlora.io import storage
from artlora.registry import files, references

# Tags of a cross-evaluation's own MLflow run: what was evaluated (train's own tags are left to training runs, so
# a search's pick never mistakes this run for a trial).
EVALUATED_ADAPTER_TAG = "artlora.evaluated.adapter"
EVALUATED_DIGEST_TAG = "artlora.evaluated.adapter_digest"
EVALUATED_VERSION_TAG = "artlora.evaluated.model_version"
CROSS_TAG = "artlora.cross_evaluation"


class CrossEvaluationError(ArtloraError):
    """An adapter or a latent cache that cannot be evaluated together."""


@dataclass(frozen=True)
class Subject:
    """The adapter evaluated: where it was named, its local file, and what is known of it."""

    reference: str  # as given: a folder URI or models:/...
    path: Path  # its diffusers-layout file, here
    digest: str  # adapter_digest of its folder
    version: str | None = None  # models:/NAME/VERSION of a registered adapter
    training_run: str | None = None  # the MLflow run that trained it, when known
    recorded_base: str = ""  # the base model it was trained on, as recorded
    completion: dict = field(default_factory=dict)  # its training's completion marker (a folder adapter)


def check_cache(cache_uri: str) -> None:
    if not storage.get_storage().exists(cache_uri):
        raise CrossEvaluationError(
            f"latent cache {cache_uri} does not exist (give evaluate.cache_uri the cache_uri that `artlora augment` "
            "printed for the dataset version)"
        )


def fetch(reference: str, base_model: str, work: Path) -> Subject:
    """The adapter `reference` names, here under `work`; a registered one checked with its base model."""
    if references.is_registered(reference):
        version = references.resolve(reference)
        base_files.verify(version.uri, base_model, version.tags.get(contracts.BASE_MANIFEST_TAG))
        folder = files.adapter_folder(version)  # its files checked against the manifest registered with it
        trained = version.tags.get(lineage.ADAPTER_URI, "")  # its training's adapter folder, with its summary
        return Subject(
            reference=reference,
            path=adapter_file(folder),
            digest=adapter_digest(folder),
            version=version.uri,
            training_run=version.run_id,
            recorded_base=version.tags.get(lineage.BASE_MODEL, ""),
            completion=_completion(trained) if trained else {},
        )
    store = storage.get_storage()
    if not store.exists(storage.join(reference, DIFFUSERS_FILE)):
        raise CrossEvaluationError(
            f"no adapter at {reference} (give evaluate.adapter_uri an adapter folder, `<run>/adapter`, or a "
            "registered version, models:/NAME/VERSION or models:/NAME@ALIAS)"
        )
    folder = store.download_dir(reference, work / "adapter")
    path = adapter_file(folder)
    return Subject(
        reference=reference,
        path=path,
        digest=adapter_digest(folder),
        recorded_base=read_metadata(path).get(contracts.BASE_MODEL_METADATA, ""),
        completion=_completion(reference),
    )


def _completion(adapter_uri: str) -> dict:
    """The training's summary in its adapter folder's completion marker (steps, kept step), when it is there."""
    store = storage.get_storage()
    return store.completion(adapter_uri) if store.is_complete(adapter_uri) else {}


def check_fits(pipe, subject: Subject, index: dict, base_model: str) -> None:
    """Refuse a latent cache encoded by another model family than the base's, and an adapter whose layers are
    not in the base (an adapter of another family: loading it would fail, or load nothing and paint the base)."""
    family = families.of(pipe)
    cached = index.get("architecture", family.name)
    if cached != family.name:
        raise CrossEvaluationError(
            f"latent cache {index.get('dataset_uri', '')} was encoded by a {cached} base model, and base model "
            f"{base_model} is {family.label} (encode the dataset with this base: `artlora augment`)"
        )
    modules = {
        name: dict(component.named_modules())
        for name, component in pipe.components.items()
        if hasattr(component, "named_modules")
    }
    with safe_open(str(subject.path), framework="pt") as handle:
        names = list(handle.keys())
    foreign = next((name for name in names if not _in(modules, name)), None)
    if foreign is not None:
        trained = f" (trained on {subject.recorded_base})" if subject.recorded_base else ""
        raise CrossEvaluationError(
            f"adapter {subject.reference}{trained} does not fit base model {base_model}, {family.label}: its layer "
            f"{foreign} is not in it; it was made for another base family (evaluate it with the base it was "
            "trained on, --set base_model=..., and a latent cache that base encoded)"
        )


def _in(modules: dict[str, dict], tensor: str) -> bool:
    """Whether a tensor name `<component>.<module path>.<adapter part>` names a module of that component."""
    component, _, rest = tensor.partition(".")
    parts = rest.split(".")
    return component in modules and any(".".join(parts[:end]) in modules[component] for end in range(1, len(parts)))


def key(config: EvaluateConfig, subject: Subject, index: dict) -> str:
    """The folder key: the adapter's content, the cache and every evaluation setting that changes a number."""
    settings = config.model_dump(mode="json", exclude={"adapter_uri", "cache_uri", "run_id", "experiment"})
    what = {
        "adapter": subject.digest,
        "cache": config.cache_uri,
        "dataset": index.get("dataset_fingerprint", ""),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def folder(config: EvaluateConfig, subject: Subject, index: dict) -> str:
    """`<storage_root>/evaluations/<key>`."""
    return contracts.evaluations_folder(config.storage_root, key(config, subject, index))


def tags(subject: Subject, index: dict) -> dict[str, str]:
    found = {
        CROSS_TAG: "true",
        EVALUATED_ADAPTER_TAG: subject.reference,
        EVALUATED_DIGEST_TAG: subject.digest,
        contracts.DATASET_FINGERPRINT_TAG: index.get("dataset_fingerprint", ""),
    }
    return found | ({EVALUATED_VERSION_TAG: subject.version} if subject.version else {})


def about(subject: Subject, index: dict, config: EvaluateConfig) -> dict:
    """What the folder's `evaluation.json` records: what was evaluated, on what."""
    return {
        "adapter": subject.reference,
        "adapter_digest": subject.digest,
        "model_version": subject.version,
        "trained_on_base": subject.recorded_base,
        "base_model": config.base_model,
        "cache_uri": config.cache_uri,
        "dataset_uri": index.get("dataset_uri", ""),
        "dataset_fingerprint": index.get("dataset_fingerprint", ""),
    }
