"""The pipeline's typed parameters: the settings people change most, each a KFP parameter of its own.

A KFP UI user changes one of them without editing the config JSON. Their defaults are the compiled config's
values; a run's values win over `config_json`'s, so the two can only disagree when someone edits both.
"""

from __future__ import annotations

from typing import Any

from artlora.config import STAGES, PipelineConfig, validate

# Parameter name -> the config key it sets ("base_model" and "model_name" are shared keys: every stage's too).
KNOBS: dict[str, str] = {
    "dataset_source": "ingest.source",
    "base_model": "base_model",
    "model_name": "model_name",
    "max_steps": "train.max_steps",
    "learning_rate": "train.learning_rate",
    "rank": "train.rank",
    "perceptual_weight": "train.perceptual_weight",
}


def _get(config: PipelineConfig, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def knob_values(config: PipelineConfig) -> dict[str, Any]:
    """The parameters' values in a config: the compiled pipeline's defaults, or a run's arguments."""
    return {name: _get(config, key) for name, key in KNOBS.items()}


def arguments(config: PipelineConfig) -> dict[str, Any]:
    """Every pipeline argument for a run of this config: the typed parameters and the whole config as JSON."""
    return {"config_json": config.model_dump_json(), **knob_values(config)}


def resolve(config_json: str, **knobs: Any) -> PipelineConfig:
    """The run's config: `config_json` with the typed parameters' values put in, validated again."""
    data = PipelineConfig.model_validate_json(config_json).model_dump(mode="json")
    for name, value in knobs.items():
        section, _, field = KNOBS[name].rpartition(".")
        if section:
            data[section][field] = value
            continue
        data[field] = value  # a shared key: the top-level value and every stage's copy of it
        for stage in STAGES:
            if field in data[stage]:
                data[stage][field] = value
    return validate(data, source="the pipeline's parameters")
