"""The champion's values as the gate compares them, like for like.

A champion evaluated on the same held-out data (same dataset fingerprint) is compared by the metrics copied to
its version tags. When the dataset changed, its held-out losses on its own data say nothing about the new data:
its adapter is measured again on the new version's held-out data, with the new version's evaluation settings
(timesteps, noise seed), exactly as the evaluate stage measures, overall and per style (the per-style values
recorded on its own data are dropped: only the styles of the new data are compared). Other metrics keep their
recorded values.
"""

from __future__ import annotations

from artlora.config import RegisterConfig
from artlora.config.register import STYLE_LOSS_PREFIX
from artlora.data import lineage
from artlora.diffusion.heldout import heldout_metrics
from artlora.io import model_registry, runs
from artlora.stages.register.gate import CHAMPION, Champion

PER_STYLE = ("val_loss_base/", STYLE_LOSS_PREFIX)  # evaluate's per-style held-out losses
EVALUATE_CONFIG = "config/evaluate.json"  # the evaluate stage's resolved config, logged to the training run


def current_champion(config: RegisterConfig, fingerprint: str) -> Champion | None:
    """The champion to compare with (None when there is none), its held-out losses on this version's data."""
    version = model_registry.version_by_alias(config.model_name, CHAMPION)
    if version is None:
        return None
    per_style = {name for name in version.tags if name.startswith(PER_STYLE)}  # the gate's page shows them all
    compared = set(config.gate_metrics) | set(heldout_metrics(0.0, 0.0)) | per_style
    metrics = lineage.tag_metrics(version.tags, compared)
    theirs = version.tags.get(lineage.DATASET_FINGERPRINT, "")
    if theirs == fingerprint:
        return Champion(version.version, metrics, f"evaluated on the same held-out data (dataset {fingerprint[:12]})")
    other = f"evaluated on other held-out data (dataset {theirs[:12] or 'unknown'}, this version's {fingerprint[:12]})"
    settings = runs.load_run_json(config.given("run_id"), EVALUATE_CONFIG)
    if not config.cache_uri or settings is None:
        missing = "register.cache_uri is not set" if not config.cache_uri else f"the run has no {EVALUATE_CONFIG}"
        return Champion(version.version, metrics, f"{other}; not measured again ({missing}), so not like for like")
    # Measuring loads the base model (torch, diffusers, peft): only a version registered on changed data pays for it.
    from artlora.stages.register.remeasure import remeasure

    measured = remeasure(version, config, settings)
    before = metrics.get("val_loss_lora")
    was = "" if before is None else f", {before:.6g} on its own data"
    note = (
        f"{other}; measured again on this version's held-out data: val_loss_lora {measured['val_loss_lora']:.6g}{was}"
    )
    kept = {name: value for name, value in metrics.items() if not name.startswith(PER_STYLE)}
    return Champion(version.version, {**kept, **measured}, note)
