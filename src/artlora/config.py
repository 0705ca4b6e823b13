"""Typed configuration: one frozen pydantic model per stage, and one for the whole pipeline.

One path for every caller: YAML file, then `--set key=value` overrides, then validation. A config file holds
the pipeline: shared keys at the top (storage_root, base_model, experiment, seed, model_name) and one section
per stage. A shared key flows into every stage that has a field of that name, unless the section sets it.
Fields named `*_uri` / `run_id` are a stage's inputs: the pipeline fills them from the stage before; when a stage
runs alone, the user passes them with `--set`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config problem, phrased for the user: which field, what is wrong, what to do."""


class StageConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def require(self, *names: str) -> None:
        """Fail clearly when an input that the pipeline normally fills is missing."""
        stage = type(self).__name__.removesuffix("Config").lower()
        for name in names:
            if getattr(self, name) in (None, ""):
                raise ConfigError(
                    f"{stage}.{name} is required when the {stage} stage runs alone: "
                    f"pass --set {stage}.{name}=... (the stage before prints it)"
                )


StorageRoot = Field(
    description="s3:// prefix under which datasets/, cache/ and runs/ are kept", pattern=r"^s3://[a-z0-9.-]{3,}"
)
BaseModelRef = Field(
    description="base Stable Diffusion model: hub id (org/name), local diffusers folder, s3:// prefix "
    "of a diffusers folder, or a single .safetensors/.ckpt file"
)
Experiment = Field("artlora", description="MLflow experiment that the stage's run is logged to")
Seed = Field(0, ge=0, description="random seed; the same seed and inputs give the same result")


class IngestConfig(StageConfig):
    source: str = Field(
        min_length=1, description="raw images: a local folder or an s3:// prefix (sub-folders = styles)"
    )
    storage_root: str = StorageRoot
    experiment: str = Experiment
    seed: int = Seed
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of each style held out for validation")
    min_size: int = Field(64, ge=8, description="smallest accepted image side, in pixels")


class AugmentConfig(StageConfig):
    dataset_uri: str | None = Field(None, description="curated dataset version (ingest's output)")
    storage_root: str = StorageRoot
    base_model: str = BaseModelRef
    experiment: str = Experiment
    seed: int = Seed
    resolution: int = Field(512, ge=32, le=2048, multiple_of=8, description="training image side, in pixels")
    views_per_image: int = Field(2, ge=1, le=64, description="augmented views encoded per image")
    hflip: bool = Field(True, description="flip views horizontally at random")
    rotation_degrees: float = Field(3.0, ge=0.0, le=20.0, description="largest random rotation, in degrees")
    color_jitter: float = Field(
        0.05, ge=0.0, le=0.5, description="brightness/contrast/saturation jitter strength; hue gets a fifth"
    )
    batch_size: int = Field(16, ge=1, le=512, description="views per VAE encode batch")


class TrainConfig(StageConfig):
    cache_uri: str | None = Field(None, description="latent cache index (augment's output)")
    storage_root: str = StorageRoot
    base_model: str = BaseModelRef
    experiment: str = Experiment
    seed: int = Seed
    rank: int = Field(8, ge=1, le=256, description="LoRA rank")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    target_modules: tuple[str, ...] = Field(
        ("to_q", "to_k", "to_v", "to_out.0"), min_length=1, description="UNet module names that get LoRA"
    )
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="peak learning rate")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps before the linear decay")
    max_steps: int = Field(500, ge=1, description="optimizer steps")
    batch_size: int = Field(4, ge=1, le=1024, description="latents per step")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping threshold (L2 norm)")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "bf16", description="autocast dtype on GPU (LoRA weights stay fp32); the CPU always trains in fp32"
    )
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints in the object store")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept; older ones are deleted")
    perceptual_weight: float = Field(0.0, ge=0.0, description="weight of the LPIPS term; 0 turns it off")
    perceptual_net: Literal["vgg", "alex", "squeeze"] = Field("vgg", description="LPIPS backbone")
    perceptual_backbone: Literal["imagenet", "random"] = Field(
        "imagenet", description="'imagenet' downloads torchvision weights; 'random' is for offline tests"
    )
    log_every: int = Field(1, ge=1, description="steps between metric logs")


class EvaluateConfig(StageConfig):
    adapter_uri: str | None = Field(None, description="trained adapter folder (train's output)")
    cache_uri: str | None = Field(None, description="latent cache index holding the validation split")
    run_id: str | None = Field(None, description="MLflow run of the training, which receives the metrics")
    storage_root: str = StorageRoot
    base_model: str = BaseModelRef
    experiment: str = Experiment
    seed: int = Seed
    prompts: tuple[str, ...] = Field(
        ("a lighthouse on a cliff", "a bowl of fruit on a table", "a city street at night"),
        min_length=1,
        description="validation prompts, rendered with the base model and with the LoRA",
    )
    image_seeds: tuple[int, ...] = Field((0, 1), min_length=1, description="one image per prompt per seed")
    resolution: int = Field(512, ge=32, le=2048, multiple_of=8, description="sample image side, in pixels")
    inference_steps: int = Field(25, ge=1, le=200, description="denoising steps per sample image")
    guidance_scale: float = Field(7.5, ge=1.0, description="classifier-free guidance scale")
    loss_timesteps: tuple[int, ...] = Field(
        (100, 300, 500, 700, 900), min_length=1, description="fixed timesteps of the held-out denoising loss"
    )


class RegisterConfig(StageConfig):
    adapter_uri: str | None = Field(None, description="trained adapter folder (train's output)")
    run_id: str | None = Field(None, description="MLflow run of the training, holding the metrics")
    base_model: str = BaseModelRef
    model_name: str = Field(
        description="MLflow registered model name", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128
    )
    gate_metric: str = Field("val_loss_lora", description="lower is better; beats the champion's to take over")


SHARED_KEYS = ("storage_root", "base_model", "experiment", "seed", "model_name")
STAGES = ("ingest", "augment", "train", "evaluate", "register")


# pydantic warns that a field named "register" shadows ABCMeta.register; the field is what we want.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class PipelineConfig(BaseModel):
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
    register: RegisterConfig

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
            fields = cls.model_fields[stage].annotation.model_fields
            shared = {k: data[k] for k in SHARED_KEYS if k in data and k in fields}
            data[stage] = {**shared, **section}
        return data

    @field_validator("base_model")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a base model")
        return value


StageT = TypeVar("StageT", bound=StageConfig)


def with_inputs(config: StageT, **inputs: Any) -> StageT:
    """A copy of a stage config with its upstream inputs filled in, validated again."""
    return type(config).model_validate({**config.model_dump(), **inputs})


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.max_steps=10` -> (["train", "max_steps"], 10); values are read as YAML scalars or lists."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if node.get(part) is None:  # absent, or an empty section (`train:` loads as None)
                node[part] = {}
            child = node[part]
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read a YAML config, apply `--set` overrides, validate; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return validate(apply_overrides(data, list(overrides)), source=str(path))


def validate(data: dict[str, Any], source: str = "config") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid config in {source}:"]
    for problem in err.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        got = f" (got {problem['input']!r})" if problem["type"] != "missing" else ""
        lines.append(f"  {field}: {problem['msg']}{got}")
    return "\n".join(lines)
