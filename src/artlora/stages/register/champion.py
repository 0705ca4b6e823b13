"""The champion's values as the gate compares them, like for like.

A champion evaluated on the same held-out data (same dataset fingerprint) is compared by the metrics copied to
its version tags. When the dataset changed, its held-out losses on its own data say nothing about the new data:
its adapter is measured again on the new version's held-out data, with the new version's evaluation settings
(timesteps, noise seed), exactly as the evaluate stage measures, overall and per style (the per-style values
recorded on its own data are dropped: only the styles of the new data are compared). Other metrics keep their
recorded values.
"""

from __future__ import annotations

import logging
import tempfile

from artlora import contracts
from artlora.config import RegisterConfig
from artlora.config.register import STYLE_LOSS_PREFIX
from artlora.data import lineage
from artlora.data.latent_cache import validation_data
from artlora.diffusion import base_files, families, loading
from artlora.diffusion.adapters import adapter_file, heldout_losses
from artlora.diffusion.heldout import heldout_metrics
from artlora.io import model_registry, runs
from artlora.stages.register.gate import CHAMPION, Champion

log = logging.getLogger(__name__)
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
    measured = remeasure(version, config, settings)
    before = metrics.get("val_loss_lora")
    was = "" if before is None else f", {before:.6g} on its own data"
    note = (
        f"{other}; measured again on this version's held-out data: val_loss_lora {measured['val_loss_lora']:.6g}{was}"
    )
    kept = {name: value for name, value in metrics.items() if not name.startswith(PER_STYLE)}
    return Champion(version.version, {**kept, **measured}, note)


def remeasure(version: model_registry.Version, config: RegisterConfig, settings: dict) -> dict[str, float]:
    """The champion adapter's held-out losses on this version's validation data, as evaluate measured them
    (val_loss_base, val_loss_lora, val_loss_delta, and val_loss_base/<style>, val_loss_lora/<style>)."""
    base_model = version.tags.get(lineage.BASE_MODEL) or config.base_model
    log.info("measuring champion version %s again on %s", version.version, config.cache_uri)
    data = validation_data(config.given("cache_uri"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_registry.download_version(version, tmp)
        base_files.verify(version.uri, base_model, version.tags.get(contracts.BASE_MANIFEST_TAG))
        pipe = loading.load_pipeline(base_model)
        scheduler = families.of(pipe).training_scheduler(pipe)
        timesteps = tuple(settings["loss_timesteps"])
        base, lora = heldout_losses(pipe, scheduler, data, adapter_file(folder), timesteps, settings["seed"])
    per_style = {f"val_loss_base/{s}": v for s, v in base.per_style.items()}
    per_style |= {f"{STYLE_LOSS_PREFIX}{s}": v for s, v in lora.per_style.items()}
    return heldout_metrics(base.loss, lora.loss) | per_style
