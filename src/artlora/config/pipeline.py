"""The whole pipeline's config: shared keys at the top, one section per stage."""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from artlora.config.augment import AugmentConfig
from artlora.config.base import BaseModelRef, Experiment, Seed, StorageRoot
from artlora.config.cluster import ClusterConfig
from artlora.config.evaluate import EvaluateConfig
from artlora.config.ingest import IngestConfig
from artlora.config.register import RegisterConfig
from artlora.config.search import SearchConfig
from artlora.config.train import CHAMPION_SHORTHAND, TrainConfig

SHARED_KEYS = ("storage_root", "base_model", "experiment", "seed", "model_name")
STAGES = ("ingest", "augment", "train", "evaluate", "register")


class _Pipeline(BaseModel):
    """PipelineConfig without its last section (see below)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage_root: str = StorageRoot
    base_model: str = BaseModelRef
    experiment: str = Experiment
    seed: int = Seed
    model_name: str = Field(description="MLflow registered model name for the adapters of this pipeline")
    ingest: IngestConfig
    augment: AugmentConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    search: SearchConfig = Field(default_factory=SearchConfig, description="the grid search (`artlora search`)")
    cluster: ClusterConfig = Field(
        default_factory=ClusterConfig, description="where the tasks run on Kubernetes (read at compile time)"
    )

    @model_validator(mode="before")
    @classmethod
    def _share_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for stage in STAGES:
            section = data.get(stage)
            if section is None:
                section = {}
            if not isinstance(section, dict):
                continue  # an already-built stage model, or a wrong type pydantic will name
            fields = stage_model(stage).model_fields
            shared = {k: data[k] for k in SHARED_KEYS if k in data and k in fields}
            data[stage] = {**shared, **section}
        return data

    @model_validator(mode="before")
    @classmethod
    def _champion_of_this_model(cls, data: Any) -> Any:
        """train.init_from: champion -> models:/<model_name>@champion (looked up when the train task starts)."""
        if not isinstance(data, dict) or not isinstance(train := data.get("train"), dict):
            return data
        if train.get("init_from") != CHAMPION_SHORTHAND or not isinstance(data.get("model_name"), str):
            return data
        return {**data, "train": {**train, "init_from": f"models:/{data['model_name']}@{CHAMPION_SHORTHAND}"}}

    @model_validator(mode="before")
    @classmethod
    def _gallery_paints_the_evaluation_prompts(cls, data: Any) -> Any:
        """train.sample_* not given: the evaluation's prompts and content prompts, at its first seed, resolution,
        steps and guidance, so the gallery shows what the report will judge."""
        if not isinstance(data, dict) or not isinstance(data.get("train") or {}, dict):
            return data
        evaluate = data.get("evaluate")
        evaluate = evaluate.model_dump() if isinstance(evaluate, BaseModel) else dict(evaluate or {})
        given = {name: evaluate.get(name, field.default) for name, field in EvaluateConfig.model_fields.items()}
        try:
            derived = {
                "sample_prompts": [*given["prompts"], *given["content_prompts"]],
                "sample_seed": next(iter(given["image_seeds"]), 0),
                "sample_resolution": given["resolution"],
                "sample_steps": given["inference_steps"],
                "sample_guidance": given["guidance_scale"],
            }
        except TypeError:  # an evaluate section of the wrong shape: its own validation names the field
            return data
        return {**data, "train": {**derived, **(data.get("train") or {})}}

    @field_validator("search")
    @classmethod
    def _searched_values_are_train_values(cls, search: SearchConfig, info: ValidationInfo) -> SearchConfig:
        train = info.data.get("train")
        if train is None:  # the train section itself is invalid; pydantic names that
            return search
        for name, values in search.space().items():
            for value in values:
                try:
                    TrainConfig.model_validate({**train.model_dump(), name: value})
                except ValidationError as err:
                    raise ValueError(f"{name}: {value!r} is not a valid train.{name}: {_first(err)}") from None
        return search

    @field_validator("base_model")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a base model")
        return value


def stage_model(stage: str) -> type[BaseModel]:
    """The config model of a stage's section (`stage` is one of STAGES)."""
    model = PipelineConfig.model_fields[stage].annotation
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"PipelineConfig.{stage} is not a stage section: {model}")
    return model


def _first(err: ValidationError) -> str:
    return err.errors()[0]["msg"]


# pydantic warns, when the class is made, that a field named "register" shadows BaseModel's inherited
# ABCMeta.register; the field is what we want. The warning is silenced for this one class statement only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class PipelineConfig(_Pipeline):
        """The resolved config of a whole pipeline run: what every task receives as `config_json`."""

        register: RegisterConfig
