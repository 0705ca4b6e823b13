"""Register: the adapter becomes an MLflow model version, and the gate decides its alias.

The version is made from an MLflow Model logged in the training run: the adapter folder (both layouts) as its
data and artlora as its code, so `mlflow.pyfunc.load_model("models:/NAME@champion").predict(prompts)` paints,
and `artlora models download` and `artlora generate` fetch the same files. Its tags carry its lineage (dataset
fingerprint, base model, config digest, code version, adapter location and digest, report; from a pipeline run
also the source listing's fingerprint and the pipeline config's digest, which its change check reads), every
metric of the run, the gate's decision with each rule's outcome (see `data.lineage`), and the sha256 of every
file of the version and of its base model's weights and configs, checked wherever the version is used;
`<run>/register/gate.html` (beside `eval/`, and as the run's `register/gate.html` artifact) is the gate's section
of the report. The version's description is its model card (`card.py`, Markdown): what the MLflow page shows
and `artlora models show` prints.

An adapter registered before (same weights: the same content digest) is not registered again: its version is
returned, with the change check's tags of this run added.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import artlora
from artlora import contracts
from artlora.config import RegisterConfig
from artlora.config.register import MEMORISATION_METRIC
from artlora.data import lineage
from artlora.data.dataset import DatasetError
from artlora.data.digests import digest
from artlora.diffusion import base_files
from artlora.diffusion.adapter_files import DIFFUSERS_FILE, adapter_digest, read_metadata
from artlora.errors import ArtloraError
from artlora.generate.settings import PARAMS  # the predict() parameters the logged model takes
from artlora.io import model_registry, runs, storage, tracking
from artlora.stages.register import card
from artlora.stages.register.champion import current_champion
from artlora.stages.register.gate import CHALLENGER, CHAMPION, Decision, decide
from artlora.stages.register.report import gate_html, gate_tags

log = logging.getLogger(__name__)


class RegisterError(ArtloraError):
    """The run cannot be registered as it is (e.g. a metric the gate reads is missing)."""


@dataclass(frozen=True, kw_only=True)
class RegisterResult:
    model_name: str
    version: str
    alias: str
    reason: str  # why this alias: the gate's outcome in one line
    gate: list[str] = field(default_factory=list)  # each rule's outcome, as tagged on the version
    reused: bool = False  # the adapter was registered before: this is its existing version
    gate_report_uri: str | None = None


def run(config: RegisterConfig) -> RegisterResult:
    config.require("adapter_uri", "run_id")
    metrics = runs.run_metrics(config.given("run_id"))
    missing = [name for name in config.gate_metrics if name not in metrics and name != MEMORISATION_METRIC]
    if missing:
        raise RegisterError(
            f"run {config.run_id} has no metric {', '.join(missing)}, which register.gate reads (run the evaluate "
            f"stage first, or fix the rule's metric name; the run has {', '.join(sorted(metrics)) or 'no metrics'})"
        )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "adapter"
        storage.get_storage().download_dir(config.given("adapter_uri"), folder)
        (folder / storage.COMPLETE_MARKER).unlink(missing_ok=True)  # the train stage's summary, not the adapter
        content = adapter_digest(folder)
        existing = model_registry.model_versions(config.model_name, {lineage.ADAPTER_DIGEST: content})
        if existing:
            return _registered_before(existing[0], change_check_tags(config))
        tags = lineage_tags(config, folder, content) | lineage.metric_tags(metrics)
        champion = current_champion(config, tags.get(lineage.DATASET_FINGERPRINT, ""))
        decision = decide(config.gate, metrics, champion)
        return _register(config, folder, tags, decision)


def _register(config: RegisterConfig, folder: Path, tags: dict[str, str], decision: Decision) -> RegisterResult:
    gate_uri = contracts.gate_page_uri(config.given("adapter_uri"))
    # Hashed before anything is logged: a base that cannot be read fails the stage with nothing half-registered.
    base = base_files.recorded_text(config.base_model)
    with runs.stage_run("register", config, run_id=config.run_id):
        source, model_id = model_registry.log_adapter_model(folder, PARAMS)
        files = model_registry.source_manifest(source)
        all_tags = {
            **tags,
            **gate_tags(decision),
            lineage.GATE_REPORT_URI: gate_uri,
            contracts.VERSION_MANIFEST_TAG: files,
            contracts.BASE_MANIFEST_TAG: base,
        }
        version = model_registry.create_version(config.model_name, source, config.given("run_id"), all_tags, model_id)
        first = _first_with_this_adapter(config.model_name, tags[lineage.ADAPTER_DIGEST], version)
        if first is not None:
            return _registered_before(first, {})
        model_registry.set_alias(config.model_name, decision.alias, version.version)
        model_registry.set_description(config.model_name, version.version, _card(config, version, decision))
        page = gate_html(decision, config.model_name, version.version).encode()
        runs.log_bytes(page, contracts.GATE_PAGE)
    storage.get_storage().put_bytes(gate_uri, page, content_type="text/html")
    log.info("registered %s version %s as %s: %s", config.model_name, version.version, decision.alias, decision.reason)
    outcomes = lineage.rule_outcomes(all_tags)
    return RegisterResult(
        model_name=config.model_name,
        version=version.version,
        alias=decision.alias,
        reason=decision.reason,
        gate=outcomes,
        gate_report_uri=gate_uri,
    )


def _first_with_this_adapter(name: str, content: str, mine: model_registry.Version) -> model_registry.Version | None:
    """Two registrations of the same adapter at once (two identical runs) both find no version and both create
    one. Each then looks again: the lowest-numbered version of the adapter is kept, and a later one is deleted
    by the process that made it, which returns the kept one. So the model ends with one version per adapter
    whatever the timing; None when `mine` is that one."""
    same = model_registry.model_versions(name, {lineage.ADAPTER_DIGEST: content})
    first = min(same, key=lambda version: int(version.version), default=mine)
    if int(first.version) >= int(mine.version):
        return None
    log.info(
        "%s version %s holds this adapter already (registered at the same time): deleting version %s",
        name,
        first.version,
        mine.version,
    )
    model_registry.delete_version(name, mine.version)
    return first


def _card(config: RegisterConfig, version: model_registry.Version, decision: Decision) -> str:
    """The version's model card (`card.py`), from its tags and run and the dataset it trained on."""
    return card.model_card(
        model=config.model_name,
        version=version.version,
        tags=version.tags,
        metrics=runs.run_metrics(config.given("run_id")),
        decision=decision,
        styles=_styles(config.given("run_id")),
        run_id=config.given("run_id"),
        tracking_uri=tracking.configure(),
    )


def _styles(run_id: str) -> card.Styles | None:
    """The trained dataset's styles, through the training's latent cache; None when it cannot be read back
    (the card then says so, and the lineage tags still name the dataset)."""
    train_config = runs.load_run_json(run_id, "config/train.json") or {}
    try:
        index = storage.get_storage().get_json(train_config["cache_uri"])
        return card.dataset_styles(index["dataset_uri"])
    except (KeyError, TypeError, storage.MissingObjectError, DatasetError) as err:
        log.warning("the model card lists no styles: the dataset could not be read back (%s)", err)
        return None


def _registered_before(version: model_registry.Version, tags: dict[str, str]) -> RegisterResult:
    if tags:  # the same adapter from this source and config: the next change check finds it
        model_registry.set_version_tags(version.name, version.version, tags)
    alias = CHAMPION if CHAMPION in version.aliases else version.tags.get(lineage.GATE_DECISION, CHALLENGER)
    before = version.tags.get(lineage.GATE_REASON, "registered before")
    reason = f"this adapter is already version {version.version}: {before}"
    log.info("%s version %s already holds this adapter; not registering it again", version.name, version.version)
    outcomes = lineage.rule_outcomes(version.tags)
    gate_uri = version.tags.get(lineage.GATE_REPORT_URI)
    return RegisterResult(
        model_name=version.name,
        version=version.version,
        alias=alias,
        reason=reason,
        gate=outcomes,
        reused=True,
        gate_report_uri=gate_uri,
    )


def lineage_tags(config: RegisterConfig, folder: Path, content: str) -> dict[str, str]:
    """Where the adapter came from: dataset, base model, config, code, adapter files and report."""
    provenance = read_metadata(folder / DIFFUSERS_FILE)
    run_tags = runs.run_tags(config.given("run_id"))
    code = f"artlora {artlora.__version__}"
    if "mlflow.source.git.commit" in run_tags:
        code += f" (git {run_tags['mlflow.source.git.commit'][:12]})"
    report = contracts.report_uri(config.given("adapter_uri"))
    train_config = provenance.get(contracts.CONFIG_METADATA)
    tags = {
        lineage.DATASET_FINGERPRINT: run_tags.get(contracts.DATASET_FINGERPRINT_TAG, ""),
        lineage.BASE_MODEL: config.base_model,
        lineage.CONFIG_DIGEST: digest(json.loads(train_config)) if train_config else "",
        lineage.CODE_VERSION: code,
        lineage.ADAPTER_URI: config.adapter_uri,
        lineage.ADAPTER_DIGEST: content,
        lineage.ADAPTER_STEP: provenance.get(contracts.STEP_METADATA, ""),
        lineage.REPORT_URI: report if storage.get_storage().exists(report) else "",
        lineage.INIT_FROM: run_tags.get(contracts.INIT_FROM_TAG, ""),
        lineage.INIT_FROM_DIGEST: run_tags.get(contracts.INIT_FROM_DIGEST_TAG, ""),
        **change_check_tags(config),
    }
    return {key: value for key, value in tags.items() if value}


def change_check_tags(config: RegisterConfig) -> dict[str, str]:
    """The source fingerprint and pipeline config digest a pipeline run passes on (none from a stage run)."""
    given = {lineage.SOURCE_FINGERPRINT: config.source_fingerprint, lineage.PIPELINE_DIGEST: config.config_digest}
    return {key: value for key, value in given.items() if value}
