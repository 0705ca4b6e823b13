"""A champion evaluated on other data, measured again on this version's held-out data: its adapter on the base
model, exactly as the evaluate stage measures (`champion.current_champion` asks for it when the dataset changed).
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
from artlora.io import model_registry

log = logging.getLogger(__name__)


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
