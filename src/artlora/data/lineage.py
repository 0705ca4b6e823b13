"""The tags of a registered model version: what register writes and the registry commands, generate and the next
register read. A version's metrics are tags too (MLflow versions have no metrics of their own), under their run
metric names, so the gate finds the champion's value of any metric it compares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DATASET_FINGERPRINT = "dataset_fingerprint"
BASE_MODEL = "base_model"
ADAPTER_URI = "adapter_uri"  # the train stage's adapter folder in the object store
ADAPTER_DIGEST = "adapter_digest"  # content digest of the adapter files: one version per adapter
ADAPTER_STEP = "adapter_step"  # the training step whose adapter was kept
CONFIG_DIGEST = "config_digest"  # digest of the resolved train config
# What a pipeline's change check compares the next run with (tasks/changes.py): the dataset source as
# listed, and the resolved pipeline config less where its tasks run.
SOURCE_FINGERPRINT = "source_fingerprint"
PIPELINE_DIGEST = "pipeline_config_digest"
CODE_VERSION = "code_version"
INIT_FROM = "init_from"  # a warm start's parent: the version (models:/NAME/VERSION) or adapter folder it began at
INIT_FROM_DIGEST = "init_from_digest"  # that parent's adapter content digest
REPORT_URI = "report_uri"  # the evaluate stage's HTML report
GATE_REPORT_URI = "gate_report_uri"  # the gate's section of the report
GATE_PREFIX = "gate."
GATE_DECISION = "gate.decision"  # champion or challenger
GATE_REASON = "gate.reason"
GATE_COMPARED = "gate.compared_with"  # the champion compared with, and whether it was measured again
GATE_RULE = "gate.rule.{}"  # each rule's outcome, numbered from 1 in the order of register.gate
PROMOTED_PREFIX = "promoted."  # promoted.<alias>.by / .at / .reason, written by `artlora models promote`

LINEAGE = (
    DATASET_FINGERPRINT,
    BASE_MODEL,
    CONFIG_DIGEST,
    CODE_VERSION,
    ADAPTER_URI,
    ADAPTER_DIGEST,
    ADAPTER_STEP,
    SOURCE_FINGERPRINT,
    PIPELINE_DIGEST,
    INIT_FROM,
    INIT_FROM_DIGEST,
)
# Shown first wherever metrics are listed; the others follow by name.
KEY_METRICS = ("val_loss_lora", "val_loss_base", "val_loss_delta", "memorised_images")
_NOT_METRICS = frozenset({*LINEAGE, REPORT_URI, GATE_REPORT_URI})


def metric_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    """A run's metrics as version tags (the system/ ones, which describe the machine, left out)."""
    return {name: f"{value:.8g}" for name, value in metrics.items() if not name.startswith("system/")}


def rule_outcomes(tags: Mapping[str, str]) -> list[str]:
    """Each gate rule's outcome from a version's tags, in rule order."""
    prefix = GATE_RULE.format("")
    numbered = {int(key[len(prefix) :]): value for key, value in tags.items() if key.startswith(prefix)}
    return [numbered[number] for number in sorted(numbered)]


def tag_metrics(tags: Mapping[str, str], names: Iterable[str] | None = None) -> dict[str, float]:
    """The metrics among a version's tags (only `names`, when given), in display order."""
    wanted = set(names) if names is not None else None
    found = {}
    for name, value in tags.items():
        if name in _NOT_METRICS or name.startswith((GATE_PREFIX, PROMOTED_PREFIX)):
            continue
        if wanted is not None and name not in wanted:
            continue
        try:
            found[name] = float(value)
        except ValueError:
            continue
    return {name: found[name] for name in display_order(found)}


def display_order(names: Iterable[str]) -> list[str]:
    """Metric names with the key metrics first (in KEY_METRICS order), then the others by name."""
    names = set(names)
    first = [name for name in KEY_METRICS if name in names]
    return [*first, *sorted(names - set(first))]
