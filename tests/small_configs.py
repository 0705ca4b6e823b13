"""The demo config shrunk to test size: a few 32 px views, a few training steps, one tiny sample image; and the
settings every model family's end-to-end tests train its tiny base with."""

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


# Every model family, by its name in artlora.diffusion.families: test_families_end_to_end.py and
# test_families_search.py run each.
FAMILIES = ("sd1", "sdxl", "sd3", "flux")
STEPS = 3  # training steps of a family's end-to-end run; a checkpoint at step 2 (checkpoint_every=2 above)
T5_LENGTH = 16
# Where a family takes settings the others refuse: the T5 length, and the transformers' target groups as their
# shipped configs (configs/sd35.yaml, configs/flux.yaml) set them.
FAMILY_SETTINGS = {
    "sd3": (f"augment.max_t5_length={T5_LENGTH}", "train.target_modules=[attention, context]"),
    "flux": (f"augment.max_t5_length={T5_LENGTH}", "train.target_modules=[attention, context, feed_forward]"),
}


def family_overrides(family: str) -> tuple[str, ...]:
    """`--set` overrides for small_config_for that train a family's tiny base in a few seconds."""
    # A high learning rate from the first step (the demo config warms up over 20), so that three steps change the
    # pictures visibly; one view per image and one held-out loss timestep, for speed.
    steps = (f"train.max_steps={STEPS}", "train.batch_size=2", "train.learning_rate=0.02", "train.warmup_steps=0")
    return (*steps, "augment.views_per_image=1", "evaluate.loss_timesteps=[500]", *FAMILY_SETTINGS.get(family, ()))
