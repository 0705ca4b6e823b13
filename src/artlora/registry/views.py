"""What the registry commands show, as plain data (`--json` prints it as it is; the CLI lays it out as text)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from artlora import contracts
from artlora.data import lineage
from artlora.io import model_registry


def age(created: datetime.datetime, now: datetime.datetime | None = None) -> str:
    """`45s`, `12m`, `3h`, `5d`: how long ago, in its largest whole unit."""
    seconds = max(0, int(((now or datetime.datetime.now(datetime.UTC)) - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def version_row(version: model_registry.Version) -> dict:
    """One line of `models list`: the version, its aliases, key metrics, dataset and age."""
    return {
        "model": version.name,
        "version": version.version,
        "aliases": list(version.aliases),
        "metrics": lineage.tag_metrics(version.tags, lineage.KEY_METRICS),
        "dataset_fingerprint": version.tags.get(lineage.DATASET_FINGERPRINT, ""),
        "created": version.created.isoformat(timespec="seconds"),
        "age": age(version.created),
    }


def all_versions(name: str | None = None) -> list[dict]:
    names = [name] if name else model_registry.registered_models()
    return [version_row(version) for model in names for version in model_registry.model_versions(model)]


def details(version: model_registry.Version) -> dict:
    """Everything `models show` tells: lineage, metrics, the gate's outcome, promotions and reports."""
    tags = version.tags
    promoted = {
        key[len(lineage.PROMOTED_PREFIX) :]: value
        for key, value in tags.items()
        if key.startswith(lineage.PROMOTED_PREFIX)
    }
    run_reports = {}
    if version.run_id:
        run_reports = {
            "evaluation_artifact": f"runs:/{version.run_id}/{contracts.REPORT_ARTIFACT}",
            "gate_artifact": f"runs:/{version.run_id}/register/gate.html",
        }
    return {
        "model": version.name,
        "version": version.version,
        "uri": version.uri,
        "aliases": list(version.aliases),
        "created": version.created.isoformat(timespec="seconds"),
        "run_id": version.run_id,
        "source": version.source,
        "lineage": {key: tags[key] for key in lineage.LINEAGE if key in tags},
        "metrics": lineage.tag_metrics(tags),
        "gate": {
            "decision": tags.get(lineage.GATE_DECISION, ""),
            "reason": tags.get(lineage.GATE_REASON, ""),
            "compared_with": tags.get(lineage.GATE_COMPARED, ""),
            "rules": lineage.rule_outcomes(tags),
        },
        "promoted": promoted,
        "card": version.description,  # the model card register wrote (Markdown), as its MLflow page shows it
        "reports": {
            "evaluation": tags.get(lineage.REPORT_URI, ""),
            "gate": tags.get(lineage.GATE_REPORT_URI, ""),
            **run_reports,
        },
    }


def comparison(versions: Sequence[model_registry.Version]) -> dict:
    """The versions' metrics and lineage side by side (a value is None where a version has none)."""
    metrics = [lineage.tag_metrics(version.tags) for version in versions]
    ordered = lineage.display_order(name for values in metrics for name in values)
    return {
        "versions": [version.uri for version in versions],
        "metrics": {name: [values.get(name) for values in metrics] for name in ordered},
        "lineage": {key: [version.tags.get(key) for version in versions] for key in lineage.LINEAGE},
        "aliases": [list(version.aliases) for version in versions],
    }
