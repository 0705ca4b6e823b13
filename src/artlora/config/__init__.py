"""Typed configuration: one frozen pydantic model per stage, and one for the whole pipeline.

One path for every caller: YAML file, then `--set key=value` overrides, then validation. A config file holds
the pipeline: shared keys at the top (storage_root, base_model, experiment, seed, model_name) and one section
per stage. A shared key flows into every stage that has a field of that name, unless the section sets it.
Fields named `*_uri` / `run_id` are a stage's inputs: the pipeline fills them from the stage before; when a stage
runs alone, the user passes them with `--set`.
"""

from artlora.config.augment import AugmentConfig
from artlora.config.base import ConfigError, StageConfig
from artlora.config.cluster import ClusterConfig, ScratchVolume, TaskSettings, Toleration
from artlora.config.evaluate import EvaluateConfig
from artlora.config.ingest import IngestConfig
from artlora.config.load import apply_overrides, load_config, parse_override, validate, with_inputs
from artlora.config.pipeline import SHARED_KEYS, STAGES, PipelineConfig
from artlora.config.register import RegisterConfig
from artlora.config.search import SEARCHABLE, SearchConfig
from artlora.config.train import TrainConfig

__all__ = [
    "STAGES",
    "SHARED_KEYS",
    "SEARCHABLE",
    "AugmentConfig",
    "ClusterConfig",
    "ConfigError",
    "EvaluateConfig",
    "IngestConfig",
    "PipelineConfig",
    "RegisterConfig",
    "ScratchVolume",
    "SearchConfig",
    "StageConfig",
    "TaskSettings",
    "Toleration",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "parse_override",
    "validate",
    "with_inputs",
]
