"""Memorisation: is a generated image a near copy of a training image?

For each generated image, its nearest training image by pixel distance (root mean square over RGB in [0, 1], both
at the generated image's size) and the Hamming distance of their perceptual hashes (64-bit pHash). An image is
flagged when both say "near copy": the pixel distance is at most `pixel_threshold` and the hashes differ in at
most `hash_bits` bits. Requiring both keeps flat, featureless images from being flagged on pixels alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import imagehash
import numpy as np
from PIL import Image


@dataclass(frozen=True, kw_only=True)
class Match:
    generated: int  # index into the generated images
    training: int  # index of its nearest training image, in the order they were compared
    pixel_distance: float
    hash_bits: int
    flagged: bool
    training_image: np.ndarray = field(compare=False, repr=False)  # that training image, for the report


@dataclass(frozen=True)
class Nearest:
    matches: list[Match]  # one per generated image
    compared: int  # training images compared with


def _phash(image: np.ndarray) -> imagehash.ImageHash:
    return imagehash.phash(Image.fromarray(image))


def nearest_training_images(
    generated: np.ndarray, training: Iterable[np.ndarray], pixel_threshold: float, hash_bits: int
) -> Nearest:
    """Each generated image's (uint8 [n, h, w, 3]) nearest training image; `training` yields the training images
    in chunks (uint8 [m, h, w, 3], the same size), so only one chunk is held at a time."""
    gen = generated.reshape(len(generated), -1).astype(np.float32) / 255
    closest = np.full(len(gen), np.inf, dtype=np.float32)
    nearest = np.zeros(len(gen), dtype=int)
    nearest_images = np.zeros_like(generated)
    compared = 0
    for chunk in training:
        train = chunk.reshape(len(chunk), -1).astype(np.float32) / 255
        # Squared distances through one matrix product: |g|^2 - 2 g.t + |t|^2.
        squared = (gen**2).sum(1)[:, None] - 2 * gen @ train.T + (train**2).sum(1)[None, :]
        best = squared.argmin(1)
        distance = squared[np.arange(len(gen)), best]
        closer = distance < closest
        closest[closer], nearest[closer] = distance[closer], compared + best[closer]
        nearest_images[closer] = chunk[best[closer]]
        compared += len(chunk)
    if not compared:
        return Nearest([], 0)
    rms = np.sqrt(np.maximum(closest, 0) / gen.shape[1])
    matches = []
    for i, j in enumerate(nearest.tolist()):
        bits = _phash(generated[i]) - _phash(nearest_images[i])
        flagged = bool(rms[i] <= pixel_threshold and bits <= hash_bits)
        matches.append(
            Match(
                generated=i,
                training=j,
                pixel_distance=float(rms[i]),
                hash_bits=int(bits),
                flagged=flagged,
                training_image=nearest_images[i],
            )
        )
    return Nearest(matches, compared)
