"""The evaluate stage's settings: the held-out loss, the per-style evidence and the sample images."""

from __future__ import annotations

from pydantic import Field

from artlora.config.base import BaseModelRef, Experiment, Seed, StageConfig, StorageRoot


class EvaluateConfig(StageConfig):
    adapter_uri: str | None = Field(
        None,
        description="trained adapter folder (train's output); without run_id also a registered version, "
        "models:/NAME/VERSION or models:/NAME@ALIAS (its files and its base model's checked against their digests)",
    )
    cache_uri: str | None = Field(None, description="latent cache index holding the validation split")
    run_id: str | None = Field(
        None,
        description="MLflow run of the training, which receives the metrics (the report goes to <run>/eval/); "
        "without it, a cross-evaluation: the adapter on this cache, into <storage_root>/evaluations/<key>/ and an "
        "MLflow run of its own",
    )
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
    images_per_style: int = Field(
        8,
        ge=2,
        le=256,
        description="images painted per style from its held-out captions (seeds 0..n-1), and real images per style "
        "and split they are compared with (style distances, confusion matrices)",
    )
    strengths: tuple[float, ...] = Field(
        (0.0, 0.5, 0.75, 1.0), min_length=1, description="LoRA strengths of the strength sweep (same seeds each)"
    )
    content_prompts: tuple[str, ...] = Field(
        ("a red circle on a blue background", "a white square on a green background"),
        min_length=1,
        description="prompts outside the styles: how far the LoRA moves their images from the base model's "
        "(content kept)",
    )
    memorisation_pixel_distance: float = Field(
        0.04,
        ge=0.0,
        le=1.0,
        description="a painted image this close (RMS over RGB in [0, 1]) to a training image, and with a pHash "
        "within memorisation_hash_bits, is flagged as a near copy",
    )
    memorisation_hash_bits: int = Field(6, ge=0, le=64, description="pHash bits that may differ in a near copy")
    clip_model: str | None = Field(
        None,
        description="a CLIP model (transformers layout, safetensors) in a local folder or an s3:// mirror: adds "
        "CLIP score and KID on CLIP features; never downloaded. Without it the report says they were skipped",
    )
