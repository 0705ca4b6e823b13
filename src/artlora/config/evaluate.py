"""The evaluate stage's settings: the held-out loss and the sample images."""

from __future__ import annotations

from pydantic import Field

from artlora.config.base import BaseModelRef, Experiment, Seed, StageConfig, StorageRoot


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
