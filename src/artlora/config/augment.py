"""The augment stage's settings: the views made of each image and how they are encoded."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from artlora.config.base import BaseModelRef, Experiment, Seed, StageConfig, StorageRoot

# Settings added after caches were made: left out of the resolved config while at their defaults
# (LeftOutAtDefault), so configs digested and compiled before keep their digests.
ADDED_LATER = frozenset({"shuffle_tags", "keep_tokens", "tag_dropout", "caption_variants"})


class AugmentConfig(StageConfig):
    left_out_at_default = ADDED_LATER
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
    # -- caption augmentation (kohya sd-scripts' shuffle_caption, keep_tokens, caption_tag_dropout_rate)
    shuffle_tags: bool = Field(
        False, description="shuffle the comma-separated tags of training captions (after the first keep_tokens)"
    )
    keep_tokens: int = Field(
        0,
        ge=0,
        le=64,
        description="leading comma-separated tags of a caption that shuffling and tag dropout leave in place "
        "(1 keeps the trigger word first)",
    )
    tag_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="probability, in [0, 1), that each tag after the first keep_tokens is left out of a caption "
        "variant; 0 turns it off",
    )
    caption_variants: int = Field(
        1,
        ge=1,
        le=64,
        description="variants made of each training caption with shuffle_tags / tag_dropout, seeded, encoded once "
        "and cached; training draws one per view and step. Without either, an image's variants are its captions. "
        "Held-out images keep their first caption",
    )
    batch_size: int = Field(16, ge=1, le=512, description="views per VAE encode batch (views of one bucket size)")
    max_t5_length: int | None = Field(
        None,
        ge=8,
        le=512,
        description="SD 3.5 and Flux.1: T5 tokens per caption in the text cache, in [8, 512]; null = the pipeline's "
        "default (SD 3.5: 256, Flux.1: 512). Shorter is faster and lighter (attention over fewer tokens every "
        "step); captions are cut there. Other families ignore it",
    )
    t5: bool = Field(
        True,
        description="SD 3.5: encode captions with T5-XXL too; false puts zeros in its place, as SD 3.5's pipeline does "
        "without text_encoder_3 (about 9 GB of GPU memory less when caching; weaker text following). Other "
        "families ignore it (Flux.1 always reads T5)",
    )

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"needs 0 < min <= max <= 1, got [{low}, {high}]")
        return value

    @model_validator(mode="after")
    def _caption_changes(self) -> AugmentConfig:
        changes = self.shuffle_tags or self.tag_dropout > 0
        if self.caption_variants > 1 and not changes:
            raise ValueError(
                "caption_variants > 1 needs shuffle_tags or tag_dropout > 0 (else every variant is the same)"
            )
        if self.keep_tokens and not changes:
            raise ValueError("keep_tokens keeps tags in place for shuffle_tags or tag_dropout: set one of them")
        return self
