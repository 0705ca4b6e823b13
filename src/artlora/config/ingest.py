"""The ingest stage's settings: what is accepted, how it is captioned, bucketed and split."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from artlora.config.base import Experiment, Seed, StageConfig, StorageRoot
from artlora.contracts import REGULARISATION_STYLE

# Settings added after dataset versions were made: left out of the resolved config while at their defaults
# (LeftOutAtDefault), so configs digested and compiled before keep their digests.
ADDED_LATER = frozenset(
    {"captions", "style_repeats", "style_loss_weights", "regularisation_source", "regularisation_weight"}
)


class IngestConfig(StageConfig):
    left_out_at_default = ADDED_LATER
    source: str = Field(
        min_length=1, description="raw images: a local folder or an s3:// prefix (sub-folders = styles)"
    )
    allow_outside_links: bool = Field(
        False,
        description="read files that symbolic links in a local source folder lead to outside it (otherwise each "
        "such link is rejected as outside_source)",
    )
    storage_root: str = StorageRoot
    experiment: str = Experiment
    seed: int = Seed
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of each style held out for validation")
    min_size: int = Field(64, ge=8, le=8192, description="smallest accepted image side, in pixels")
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
    model_name: str = Field(
        "",
        description="the pipeline's registered model name (a shared key): the caption of images that have no "
        "caption, no style folder and no trigger_word",
    )
    trigger_word: str = Field(
        "",
        max_length=100,
        description="put first in every caption that lacks it (e.g. 'sks style'); '' for none (images without a "
        "caption or style folder are then captioned with model_name)",
    )
    empty_caption: Literal["style", "trigger", "reject"] = Field(
        "style",
        description="image without a caption: use its style label (folder name; for top-level images the trigger "
        "word, else model_name), use the trigger word (else model_name), or reject it",
    )
    caption_token_limit: int = Field(
        77, ge=8, le=1024, description="text encoder's token limit, start and end tokens included (CLIP: 77)"
    )
    long_caption: Literal["truncate", "keep"] = Field(
        "truncate", description="caption over caption_token_limit (estimated): cut at a word boundary, or keep it"
    )
    captions: Literal["first", "all"] = Field(
        "first",
        description="'first': one caption per image (the first sidecar by precedence, else its metadata.jsonl "
        "line); 'all': every caption of it (each sidecar .txt/.caption, one per non-empty line, and every "
        "metadata.jsonl entry naming it): training draws among them, evaluation reads the first",
    )
    # -- balance between styles (a property of the data, as kohya's folder repeats and OneTrainer's concepts)
    style_repeats: dict[str, int] = Field(
        {},
        description="times each training image of a style is seen per epoch, {style: n} with n in [1, 1000]; "
        "styles not named are seen once (kohya sd-scripts' num_repeats, OneTrainer's concept repeats)",
    )
    style_loss_weights: dict[str, float] = Field(
        {},
        description="weight of a style's views in the training loss, {style: w} with w in (0, 100]; styles not "
        "named weigh 1 (OneTrainer's concept loss weight)",
    )
    # -- regularisation images (kohya sd-scripts' is_reg folders, DreamBooth's class images for prior preservation)
    regularisation_source: str = Field(
        "",
        description="ordinary images of what the style prompts paint (photos, plain renderings), each with its own "
        "caption sidecar or metadata.jsonl line: a local folder or an s3:// prefix, read like source but its "
        f"sub-folders are not styles; all go to training under the reserved style {REGULARISATION_STYLE!r}, "
        "captioned without the trigger word, so the adapter keeps the base's answers to such prompts; '' for none",
    )
    regularisation_weight: float = Field(
        1.0,
        gt=0.0,
        le=100.0,
        description="weight of the regularisation images' views in the training loss, in (0, 100] (needs "
        "regularisation_source)",
    )
    max_per_style: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="keep at most this many images per style (drawn by seed); null for no cap",
    )
    bucket_resolution: int = Field(
        512, ge=64, le=4096, multiple_of=64, description="side of the square whose area the training buckets have"
    )
    bucket_max_upscale: float = Field(
        1.0, ge=1.0, le=8.0, description="largest factor an image may be enlarged by to fill its bucket"
    )
    workers: int = Field(
        0, ge=0, le=256, description="decoding processes; 0 = one per CPU this process may use (cgroup quota, affinity)"
    )

    @field_validator("background")
    @classmethod
    def _rgb(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if not all(0 <= channel <= 255 for channel in value):
            raise ValueError("each channel must be 0-255")
        return value

    @field_validator("style_repeats")
    @classmethod
    def _repeats(cls, value: dict[str, int]) -> dict[str, int]:
        if bad := {style: n for style, n in value.items() if not 1 <= n <= 1000}:
            raise ValueError(f"each repeat count must be in [1, 1000], got {bad}")
        return value

    @field_validator("style_loss_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        if bad := {style: w for style, w in value.items() if not 0 < w <= 100}:
            raise ValueError(f"each loss weight must be in (0, 100], got {bad}")
        return value

    @model_validator(mode="after")
    def _regularisation(self) -> IngestConfig:
        if self.regularisation_weight != 1.0 and not self.regularisation_source:
            raise ValueError("regularisation_weight needs regularisation_source (set ingest.regularisation_source)")
        if REGULARISATION_STYLE in self.style_loss_weights:
            raise ValueError(
                f"style_loss_weights names the regularisation images ({REGULARISATION_STYLE!r}): set "
                "ingest.regularisation_weight instead"
            )
        return self

    @model_validator(mode="after")
    def _trigger_for_empty_captions(self) -> IngestConfig:
        if self.empty_caption == "trigger" and not (self.trigger_word.strip() or self.model_name.strip()):
            raise ValueError("empty_caption='trigger' needs a trigger_word: set ingest.trigger_word (or model_name)")
        return self
