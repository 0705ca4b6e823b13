"""Register: the adapter becomes an MLflow model version, and the gate decides its alias.

The version's tags carry its lineage (dataset fingerprint, base model, adapter location; from a pipeline run
also the source listing's fingerprint and the config's digest) and its metrics. It takes the alias `champion`
when its gate metric beats the current champion's (or there is no champion yet); otherwise it is the
`challenger`, and the champion stays where it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from artlora.config import RegisterConfig
from artlora.io import tracking
from artlora.stages.register.gate import CHAMPION, choose_alias

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterResult:
    model_name: str
    version: str
    alias: str
    metric: float
    champion_metric: float | None


def run(config: RegisterConfig) -> RegisterResult:
    config.require("adapter_uri", "run_id")
    metrics = tracking.run_metrics(config.run_id)
    if config.gate_metric not in metrics:
        raise ValueError(
            f"run {config.run_id} has no metric {config.gate_metric!r} (register.gate_metric): "
            f"run the evaluate stage first; the run has {sorted(metrics)}"
        )
    run_tags = tracking.run_tags(config.run_id)
    champion = tracking.version_by_alias(config.model_name, CHAMPION)
    champion_metric = (
        float(champion.tags[config.gate_metric]) if champion and config.gate_metric in champion.tags else None
    )
    tags = {
        "dataset_fingerprint": run_tags.get("artlora.dataset_fingerprint", ""),
        "base_model": config.base_model,
        "adapter_uri": config.adapter_uri,
        **{name: f"{value:.8g}" for name, value in metrics.items() if name.startswith("val_")},
        # What the pipeline's change check compares a new run with (orchestration/changes.py).
        **{name: getattr(config, name) for name in ("source_fingerprint", "config_digest") if getattr(config, name)},
    }
    with tracking.stage_run("register", config, run_id=config.run_id):
        version = tracking.create_version(
            config.model_name, tracking.artifact_uri(config.run_id, "adapter"), config.run_id, tags
        )
        alias = choose_alias(metrics[config.gate_metric], champion_metric)
        tracking.set_alias(config.model_name, alias, version.version)
    log.info("registered %s version %s as %s", config.model_name, version.version, alias)
    return RegisterResult(config.model_name, str(version.version), alias, metrics[config.gate_metric], champion_metric)
