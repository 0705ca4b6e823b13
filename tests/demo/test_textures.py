"""The texture patches the pretrained base's VAE learns on: repeatable per index, varied, and full of detail."""

from __future__ import annotations

import numpy as np

from artlora.demo import textures


def test_a_patch_is_painted_again_alike_from_its_index_alone():
    batch = textures.dataset(6, size=64, seed=3, start=10)
    assert batch.shape == (6, 64, 64, 3) and batch.dtype == np.uint8
    assert np.array_equal(batch[4], textures.render(14, size=64, seed=3))
    assert not np.array_equal(batch[0], textures.render(10, size=64, seed=4))  # the seed matters


def test_patches_are_rich_in_fine_detail():
    """Most patches have strong pixel-to-pixel changes (lines, dots, edges), not only smooth washes."""
    batch = textures.dataset(64, size=64).astype(np.float64)
    steps = np.abs(np.diff(batch, axis=2)).mean(axis=(1, 2, 3))
    assert np.mean(steps > 8) > 0.65, np.round(steps)  # toy scenes: 0.45
    assert len({tuple(image[32, 32]) for image in batch}) > 50  # colours vary from patch to patch
