"""The demo config shrunk to test size: a few 32 px views, a few training steps, one tiny sample image."""

from __future__ import annotations

from pathlib import Path

from artlora.config import PipelineConfig, load_config

DEMO_CONFIG = Path(__file__).parents[1] / "configs" / "demo.yaml"


def small_config_for(bucket: str, base_model: Path, source: Path, *extra: str) -> PipelineConfig:
    """`extra` are further `--set` overrides, applied last."""
    overrides = [
        f"storage_root={bucket}",
        f"base_model={base_model}",
        f"ingest.source={source}",
        "ingest.val_fraction=0.2",
        "augment.resolution=32",
        "augment.batch_size=16",
        "train.max_steps=4",
        "train.batch_size=4",
        # A small adapter, whatever the demo's: tests of the machinery stay fast.
        "train.target_modules=[attention]",
        "train.rank=8",
        "train.alpha=8",
        "train.checkpoint_every=2",
        "train.perceptual_weight=0",
        "train.train_text_encoder=false",
        "evaluate.resolution=32",
        "evaluate.inference_steps=2",
        "evaluate.prompts=[a woodcut of a tree]",
        "evaluate.image_seeds=[0]",
        "evaluate.images_per_style=2",
        "evaluate.strengths=[0, 1]",
        "evaluate.content_prompts=[a red circle]",
        *extra,
    ]
    return load_config(DEMO_CONFIG, overrides)
