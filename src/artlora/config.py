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
    # Pillow refuses images over twice its MAX_IMAGE_PIXELS (178,956,970) whatever we say; the limit stays below.
    max_pixels: int = Field(
        80_000_000, ge=4096, le=178_956_970, description="largest accepted width x height (decompression-bomb guard)"
    )
    max_aspect_ratio: float = Field(3.0, ge=1.0, le=10.0, description="largest accepted long side / short side")
    blur_threshold: float = Field(
        0.0,
        ge=0.0,
        description="reject images whose variance of the Laplacian (grey, 0-255, scaled to at most 512x512 px of "
        "area) is below this; 0 turns the check off",
    )
    near_duplicates: Literal["reject", "keep_together"] = Field(
        "reject",
        description="images within near_duplicate_distance form a cluster: 'reject' keeps its largest image, "
        "'keep_together' keeps all of them in the same split",
    )
    near_duplicate_distance: int = Field(
        6, ge=0, le=32, description="largest Hamming distance between 64-bit perceptual hashes of near duplicates"
    )
    background: tuple[int, int, int] = Field(
        (255, 255, 255), description="RGB colour (0-255 each) on which transparent images are composited"
    )
    trigger_word: str = Field(
        "", max_length=100, description="put first in every caption that lacks it (e.g. 'sks style'); '' for none"
    )
    empty_caption: Literal["style", "trigger", "reject"] = Field(
        "style",
        description="image without a caption: use its style label (folder name; the trigger word for top-level "
        "images), use the trigger word, or reject it",
    )
    caption_token_limit: int = Field(
        77, ge=8, le=1024, description="text encoder's token limit, start and end tokens included (CLIP: 77)"
    )
    long_caption: Literal["truncate", "keep"] = Field(
        "truncate", description="caption over caption_token_limit (estimated): cut at a word boundary, or keep it"
    )
    max_per_style: int | None = Field(
        None, ge=1, description="keep at most this many images per style (drawn by seed); null for no cap"
    )
    bucket_resolution: int = Field(
        512, ge=64, le=4096, multiple_of=64, description="side of the square whose area the training buckets have"
    )
    bucket_max_upscale: float = Field(
        1.0, ge=1.0, le=8.0, description="largest factor an image may be enlarged by to fill its bucket"
    )
    workers: int = Field(0, ge=0, le=256, description="decoding processes; 0 = one per available core")

    @field_validator("background")
    @classmethod
    def _rgb(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if not all(0 <= channel <= 255 for channel in value):
            raise ValueError("each channel must be 0-255")
        return value

    @model_validator(mode="after")
    def _trigger_for_empty_captions(self) -> IngestConfig:
        if self.empty_caption == "trigger" and not self.trigger_word.strip():
            raise ValueError("empty_caption='trigger' needs a trigger_word: set ingest.trigger_word")
        return self


class AugmentConfig(StageConfig):
    dataset_uri: str | None = Field(None, description="curated dataset version (ingest's output)")
    storage_root: str = StorageRoot
    base_model: str = BaseModelRef
    experiment: str = Experiment
    seed: int = Seed
    resolution: int = Field(
        512,
        ge=32,
        le=2048,
        multiple_of=8,
        description="view side, in pixels, for images without a bucket from ingest (square views)",
    )
    views_per_image: int = Field(2, ge=1, le=64, description="augmented views encoded per image")
    crop_scale: tuple[float, float] = Field(
        (0.8, 1.0),
        description="random crop of the bucket's aspect ratio: (min, max) share of the area of the largest such "
        "crop, each in (0, 1]; [1.0, 1.0] turns random cropping off (the largest centred crop)",
    )
    hflip: bool = Field(True, description="flip views horizontally at random")
    rotation_degrees: float = Field(
        3.0, ge=0.0, le=20.0, description="largest random rotation, in degrees (no empty corners); 0 turns it off"
    )
    brightness: float = Field(
        0.05, ge=0.0, le=1.0, description="brightness jitter: factor drawn from [1 - x, 1 + x]; 0 turns it off"
    )
    contrast: float = Field(
        0.05, ge=0.0, le=1.0, description="contrast jitter: factor drawn from [1 - x, 1 + x]; 0 turns it off"
    )
    saturation: float = Field(
        0.05, ge=0.0, le=1.0, description="saturation jitter: factor drawn from [1 - x, 1 + x]; 0 turns it off"
    )
    hue: float = Field(
        0.01, ge=0.0, le=0.5, description="hue jitter: shift drawn from [-x, x] of the colour wheel; 0 turns it off"
    )
    batch_size: int = Field(16, ge=1, le=512, description="views per VAE encode batch (views of one bucket size)")

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"needs 0 < min <= max <= 1, got [{low}, {high}]")
        return value


class TrainConfig(StageConfig):
    cache_uri: str | None = Field(None, description="latent cache index (augment's output)")
    storage_root: str = StorageRoot
    base_model: str = BaseModelRef
    experiment: str = Experiment
    seed: int = Seed
    # -- the adapter
    rank: int = Field(8, ge=1, le=256, description="LoRA rank")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA input, in [0, 1)")
    target_modules: tuple[str, ...] = Field(
        ("attention",),
        min_length=1,
        description="UNet layers that get LoRA: the groups 'attention' (to_q, to_k, to_v, to_out.0), "
        "'feed_forward' (ff.net.0.proj, ff.net.2) and 'convolutions' (ResNet conv1, conv2, conv_shortcut and the "
        "down/up-sampler convs), and/or module names matched by suffix as peft does (e.g. proj_in)",
    )
    use_dora: bool = Field(False, description="DoRA: a trained magnitude per output channel besides the LoRA update")
    train_text_encoder: bool = Field(
        False,
        description="LoRA also on the text encoder(s)' attention (q/k/v/out projections, same rank and alpha); "
        "caption states are then computed every step instead of read from the cache (slower, more memory)",
    )
    text_encoder_learning_rate: float | None = Field(
        None, gt=0, le=1.0, description="peak learning rate of the text-encoder LoRA; null = learning_rate"
    )
    # -- the objective
    min_snr_gamma: float | None = Field(
        None,
        gt=0,
        description="min-SNR-gamma loss weighting (5 is usual; per-sample weight min(SNR, gamma)/SNR); "
        "null turns it off",
    )
    noise_offset: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="scale of a per-channel constant added to the noise (0.05-0.1 is usual); "
        "lets the model learn very dark and very bright images; 0 turns it off",
    )
    caption_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="probability, in [0, 1), that a view trains with the empty caption "
        "(keeps classifier-free guidance working); 0 turns it off",
    )
    perceptual_weight: float = Field(0.0, ge=0.0, description="weight of the LPIPS term; 0 turns it off")
    perceptual_net: Literal["vgg", "alex", "squeeze"] = Field("vgg", description="LPIPS backbone")
    perceptual_backbone: Literal["imagenet", "random"] = Field(
        "imagenet", description="'imagenet' downloads torchvision weights; 'random' is for offline tests"
    )
    perceptual_every: int = Field(1, ge=1, description="apply the LPIPS term every k-th step (cost / k)")
    perceptual_max_timestep: int = Field(
        1000,
        ge=1,
        description="LPIPS only on samples whose timestep is below this (x0 predicted from heavy noise "
        "is a blur); 1000 = every timestep of SD's schedule",
    )
    perceptual_batch: int | None = Field(
        None, ge=1, description="at most this many samples of a step get the LPIPS term; null = all that qualify"
    )
    perceptual_scale: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="side of the compared images as a share of the training resolution, in "
        "(0, 1]: latents are resized before the VAE decode, so 0.5 makes decode and LPIPS about 4x cheaper",
    )
    # -- optimisation
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="peak learning rate")
    lr_schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="after the warm-up: linear decay to 0, cosine decay to 0, or constant"
    )
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear warm-up from 0 to the peak rate")
    max_steps: int = Field(500, ge=1, description="optimizer steps")
    batch_size: int = Field(4, ge=1, le=1024, description="latents per micro-batch (all of one latent size)")
    gradient_accumulation: int = Field(
        1, ge=1, le=1024, description="micro-batches per optimizer step; the effective batch is batch_size x this"
    )
    weight_decay: float = Field(1e-2, ge=0.0, description="AdamW decoupled weight decay on the LoRA weights")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping threshold (L2 norm)")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "bf16", description="autocast dtype on GPU (LoRA weights stay fp32); the CPU always trains in fp32"
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute UNet activations in the backward pass: less GPU memory, about 30% slower"
    )
    channels_last: bool = Field(False, description="UNet in channels-last memory layout (faster convolutions on GPU)")
    torch_compile: bool = Field(
        False, description="torch.compile the UNet (GPU; the first steps of each latent size compile, then faster)"
    )
    # -- checkpoints, validation, early stopping
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints in the object store")
    keep_checkpoints: int = Field(
        2, ge=1, description="newest checkpoints kept, besides the one with the best validation loss"
    )
    eval_every: int = Field(
        0,
        ge=0,
        description="steps between validation losses (held-out denoising loss on the validation split, "
        "fixed timesteps and noise); also run at the last step; 0 turns validation and early stopping off",
    )
    eval_timesteps: tuple[int, ...] = Field(
        (100, 300, 500, 700, 900), min_length=1, description="fixed timesteps of the validation loss"
    )
    early_stopping_patience: int = Field(
        0, ge=0, description="validations in a row without improvement before training stops; 0 never stops early"
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0.0, description="smallest decrease of the validation loss that counts as an improvement"
    )
    log_every: int = Field(
        10,
        ge=1,
        description="steps between reads of the metrics from the GPU (each read waits for it); every "
        "step's metrics are logged",
    )
    system_metrics: bool = Field(
        True, description="log CPU, memory, disk, network and (with NVIDIA GPUs) GPU use to MLflow during training"
    )

    @model_validator(mode="after")
    def _settings_that_need_another(self) -> TrainConfig:
        if self.early_stopping_patience and not self.eval_every:
            raise ValueError("early_stopping_patience needs validation: set eval_every > 0")
        if self.text_encoder_learning_rate is not None and not self.train_text_encoder:
            raise ValueError("text_encoder_learning_rate is set but train_text_encoder is false: set both or neither")
        return self


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
