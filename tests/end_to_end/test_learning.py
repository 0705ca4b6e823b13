"""The controls that show a LoRA learns the styles its captions name, on the pretrained tiny base.

Each adapter is trained by the real stages (ingest, augment, train) and measured on one common held-out set of all
five sample styles, painted from another seed, so no held-out image was trained on:
- two adapters on two disjoint halves of the styles: each lowers its own styles' held-out loss more than the other
  half's (a bug pairing captions with the wrong latents, or styles with the wrong images, fails this);
- an adapter trained with the captions shuffled against the images: its held-out loss falls as a real one's does,
  but the evidence that the styles were learned from their captions is gone: the caption gap (held-out loss with
  another style's caption, minus with its own), clear in both halves' adapters, stays at the base model's.

The same controls on what a person sees, images painted from the held-out captions: each half's adapter paints its
own styles closer to their real images than the base does (style movement below 1), and nearer than the other
half's adapter does; the shuffled adapter's images tell the styles apart no better than the base's.
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from diffusers import DDPMScheduler
from small_configs import small_config_for

from artlora.config import with_inputs
from artlora.data.latent_cache import validation_data
from artlora.demo import pretrained, sample_data
from artlora.diffusion import families, loading
from artlora.diffusion.adapters import adapter_file, load_adapter, read_by_adapter
from artlora.diffusion.heldout import heldout_loss_by_style, with_other_styles_captions
from artlora.diffusion.painting import paint
from artlora.io import settings, storage
from artlora.stages.augment import run as augment
from artlora.stages.evaluate.painting import dataset_images
from artlora.stages.evaluate.style_distance import StyleDistance, combined, scales
from artlora.stages.ingest import run as ingest
from artlora.stages.train import run as train

pytestmark = pytest.mark.slow

TEST_BUCKET = "s3://artlora-tests"  # the session store's bucket (conftest.py)

# The held-out loss at the timesteps where the caption shows: at 100 and 300 the noisy latent alone nearly fixes the
# prediction and another style's caption changes it by almost nothing (measured, halves trained 60 steps of 32:
# caption gaps of 0.0000 to 0.0024 there, 0.0084 and 0.051 at 900), so averaging them in only thinned every gap,
# and cost two fifths of the measuring.
TIMESTEPS = (500, 700, 900)
HALVES = (("op_art", "pointillist", "woodcut"), ("geometric", "watercolour"))
TRAIN = [
    "augment.resolution=64",
    "augment.views_per_image=2",
    # (Measured on the first pretrained base; on the current one that margin is 0.054, not 0.005.)
    # 80 steps at 0.012 (warm-up 10) keep the tight margin, the second half's caption gap over the base's + 0.005,
    # as wide as 120 at 0.008 (warm-up 20) did: 0.0087 against 0.0036 (120 steps: 0.0159 against 0.0036, both at
    # TIMESTEPS), for two thirds of the training. Fewer samples fail it: 30 to 60 steps of 8 to 16 (0.012 to
    # 0.016) left that gap at 0.0001 to 0.0018 and the shuffled adapter's loss on geometric rising (+0.03 to
    # +0.08); so did 120 steps of 4, and 40 to 60 steps of 32 to 48 cost as much as 120 of 16.
    "train.max_steps=80",
    "train.batch_size=16",
    "train.learning_rate=0.012",
    "train.warmup_steps=10",
    "train.target_modules=[attention,feed_forward,convolutions,proj_in,proj_out]",  # as the demo's adapter
    "train.rank=16",
    "train.alpha=16",
    "train.train_text_encoder=true",
    # No validation: with one validation, at the last step, the adapter written was the last one anyway.
    "train.eval_every=0",
    "train.early_stopping_patience=0",
    "train.checkpoint_every=1000",
    "ingest.val_fraction=0.1",
]


@pytest.fixture(scope="module")
def environment(mlflow_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("learning")
    with mock.patch.dict(os.environ, {**mlflow_server.environment(), settings.WORK_DIR: str(work)}):
        yield work


def _train(work: Path, name: str, styles=sample_data.STYLES, shuffle: bool = False):
    """Ingest, augment and train on 40 sample images per style (the captions shuffled, if asked)."""
    folder = work / name
    sample_data.generate(folder, count=40 * len(styles), size=64, seed=0, styles=styles)
    if shuffle:
        sidecars = sorted(folder.rglob("*.txt"))
        captions = [path.read_text() for path in sidecars]
        random.Random(0).shuffle(captions)
        for path, caption in zip(sidecars, captions, strict=True):
            path.write_text(caption)
    config = small_config_for(f"{TEST_BUCKET}/learning-{name}", pretrained.ensure(), folder, *TRAIN)
    dataset = ingest.run(config.ingest)
    cache = augment.run(with_inputs(config.augment, dataset_uri=dataset.dataset_uri)).cache_uri
    return train.run(with_inputs(config.train, cache_uri=cache))


@pytest.fixture(scope="module")
def heldout_cache(environment) -> str:
    """All five styles from another seed: only its validation split is used."""
    folder = environment / "heldout"
    sample_data.generate(folder, count=250, size=64, seed=1)
    config = small_config_for(f"{TEST_BUCKET}/learning-heldout", pretrained.ensure(), folder, *TRAIN)
    dataset = ingest.run(with_inputs(config.ingest, val_fraction=0.4))
    return augment.run(with_inputs(config.augment, dataset_uri=dataset.dataset_uri)).cache_uri


@dataclass(frozen=True)
class Measured:
    """Per style, with the adapter over without it, minus 1 (negative: the adapter helps): the held-out loss;
    per style the caption gap (held-out loss with another style's caption minus with its own) without and
    with the adapter; and the style distances of the images the adapter painted (rows: painted from each style's
    held-out captions; columns: each style's held-out images)."""

    loss_change: dict[str, float]
    gap_base: dict[str, float]
    gap_lora: dict[str, float]
    distances: np.ndarray


@dataclass(frozen=True)
class Base:
    loss: dict[str, float]
    gap: dict[str, float]
    distances: np.ndarray  # as Measured's, of the base model's images


# Painted as the demo's evaluation paints (64 px, guidance 5), with fewer denoising steps: 8 images per style.
PAINTED_PER_STYLE = 8
PAINT = {"resolution": 64, "steps": 10, "guidance": 5.0}


def _losses(pipe, data) -> tuple[dict[str, float], dict[str, float]]:
    """Per style, the held-out loss and the caption gap of the pipeline's UNet (and text encoder) as loaded."""
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    family = families.of(pipe)
    right = heldout_loss_by_style(family, pipe.unet, scheduler, data, TIMESTEPS, 0).per_style
    other = with_other_styles_captions(data)
    wrong = heldout_loss_by_style(family, pipe.unet, scheduler, other, TIMESTEPS, 0).per_style
    return right, {style: wrong[style] - right[style] for style in right}


class RealImages:
    """The held-out set's images per style: the validation split's (what painted images are compared with) and
    its training split's, whose distances to the former set the unit of each measure (as the evaluation does)."""

    def __init__(self, cache_uri: str):
        index = storage.get_storage().get_json(cache_uri)
        splits = dataset_images(index["dataset_uri"], PAINT["resolution"], PAINTED_PER_STYLE)
        self.styles = list(sample_data.STYLES)
        self.images = [splits["val"][style][0] for style in self.styles]
        self.captions = [splits["val"][style][1] for style in self.styles]
        self.distance = StyleDistance(0)
        self.unit = scales(self.distance.matrices([splits["train"][style][0] for style in self.styles], self.images))

    def distances(self, pipe) -> np.ndarray:
        """Each style's images painted by the pipeline as loaded (its held-out captions, seeds 0, 1, ...), against
        every style's held-out images."""
        painted = [paint(pipe, captions, list(range(len(captions))), **PAINT) for captions in self.captions]
        return combined(self.distance.matrices(painted, self.images), self.unit)


@pytest.fixture(scope="module")
def real_images(heldout_cache) -> RealImages:
    return RealImages(heldout_cache)


@pytest.fixture(scope="module")
def base_losses(heldout_cache, real_images) -> Base:
    """The base model's, measured once for every adapter."""
    pipe = loading.load_pipeline(str(pretrained.ensure()))
    pipe.set_progress_bar_config(disable=True)
    loss, gap = _losses(pipe, validation_data(heldout_cache))
    return Base(loss, gap, real_images.distances(pipe))


def _measure(adapter_uri: str, cache_uri: str, base: Base, real_images: RealImages) -> Measured:
    pipe = loading.load_pipeline(str(pretrained.ensure()))
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as folder:
        storage.get_storage().download_dir(adapter_uri, folder)
        load_adapter(pipe, adapter_file(folder))
    lora, gap_lora = _losses(pipe, read_by_adapter(pipe, validation_data(cache_uri)))
    change = {style: lora[style] / base.loss[style] - 1 for style in base.loss}
    return Measured(change, base.gap, gap_lora, real_images.distances(pipe))


def movement(measured: Measured, base: Base, style: str) -> float:
    """The adapter's style distance from its images of `style` to the style's held-out images over the base's."""
    i = sample_data.STYLES.index(style)
    return float(measured.distances[i, i] / base.distances[i, i])


def specificity(distances: np.ndarray, styles) -> float:
    """How much closer each style's painted images are to that style's real images than to the other `styles`'
    (mean over `styles`): above 0, the images tell the styles apart."""
    index = [sample_data.STYLES.index(style) for style in styles]
    block = distances[np.ix_(index, index)]
    others = (block.sum(axis=1) - np.diag(block)) / (len(index) - 1)
    return float(np.mean(others - np.diag(block)))


@pytest.fixture(scope="module")
def halves(environment, heldout_cache, base_losses, real_images) -> list[Measured]:
    return [
        _measure(_train(environment, f"half-{n}", styles=half).adapter_uri, heldout_cache, base_losses, real_images)
        for n, half in enumerate(HALVES)
    ]


def test_adapters_on_disjoint_halves_of_the_styles_each_help_their_own_half_most(halves):
    for own, half in enumerate(HALVES):
        mine, other = halves[own].loss_change, halves[1 - own].loss_change
        for style in half:
            assert mine[style] < 0, (style, mine)  # helps its own styles
            assert mine[style] < other[style], (style, mine, other)  # more than the other half's adapter does


def test_adapters_on_disjoint_halves_paint_their_own_styles_nearer_to_them(halves, base_losses):
    moves = {}
    for own, half in enumerate(HALVES):
        for style in half:
            mine, other = movement(halves[own], base_losses, style), movement(halves[1 - own], base_losses, style)
            moves[style] = (round(mine, 3), round(other, 3))
    print("style movement, own half's adapter and the other's:", moves)
    # Measured: 0.23 to 0.66 for its own styles, 0.64 to 0.99 for the other half's adapter.
    for style, (mine, other) in moves.items():
        assert mine < 1, (style, moves)  # moved toward the style
        assert mine < other, (style, moves)  # nearer than the adapter that never saw the style


def _mean(values: dict[str, float], styles) -> float:
    return float(np.mean([values[style] for style in styles]))


@pytest.fixture(scope="module")
def shuffled(environment, heldout_cache, base_losses, real_images) -> Measured:
    return _measure(_train(environment, "shuffled", shuffle=True).adapter_uri, heldout_cache, base_losses, real_images)


def test_shuffled_captions_leave_no_evidence_that_the_styles_were_learned(base_losses, halves, shuffled):
    everything = sample_data.STYLES
    # Trained on the right captions, each half's adapter reads its styles from their captions: another style's
    # caption costs it clearly more than it costs the base model (measured: 0.126 and 0.061, base 0.059 and 0.0018;
    # on the first pretrained base, whose VAE blurred the styles' detail: 0.039 and 0.0087, base 0.0021 and -0.0014).
    own_gaps = []
    for half, measured in zip(HALVES, halves, strict=True):
        own_gaps.append(_mean(measured.gap_lora, half))
        assert own_gaps[-1] > _mean(measured.gap_base, half) + 0.005, (half, measured)
    # Trained on shuffled captions, the adapter learns only the data's average look: its held-out loss falls for
    # every style, so loss alone cannot tell it from a real one, but its caption gap stays near the base model's
    # (measured: -0.0004, against a quarter of the smaller own gap, 0.015; its loss fell by 6% to 36%. On the first
    # pretrained base: 0.0004 against 0.0022, and 3.5% to 24%).
    assert all(change < 0 for change in shuffled.loss_change.values()), shuffled
    assert _mean(shuffled.gap_lora, everything) < 0.25 * min(own_gaps), (own_gaps, shuffled)


def test_shuffled_captions_paint_the_styles_no_more_apart_than_the_base(base_losses, halves, shuffled):
    everything = sample_data.STYLES
    base = {half: specificity(base_losses.distances, half) for half in HALVES}
    gains = [specificity(measured.distances, half) - base[half] for half, measured in zip(HALVES, halves, strict=True)]
    mixed = specificity(shuffled.distances, everything) - specificity(base_losses.distances, everything)
    print(f"specificity over the base's: own halves {gains}, shuffled on every style {mixed:.3f}")
    # Trained on the right captions, each half's images tell its styles apart clearly more than the base's
    # (measured: +0.84 and +2.16); trained on shuffled ones, no more than the base's (measured: +0.003).
    assert min(gains) > 0.1, gains
    assert mixed < 0.25 * min(gains), (mixed, gains)
