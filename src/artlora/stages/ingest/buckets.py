"""Aspect-ratio buckets: the training size of each image, close to its own shape, of about equal area.

A bucket is (width, height) in pixels, both multiples of `STEP` (what the UNet's downsampling needs), with an
area of at most `resolution` squared. For an image of W x H it is the bucket nearest in aspect ratio among the
largest ones that fit, where fitting means the image need not be enlarged by more than `max_upscale` to cover
it (training scales an image to cover its bucket, then crops the overhang). Ties go to the larger area.

"Largest" means maximal: neither side can grow by a step without breaking the area or the upscale limit. So
at resolution 512 a square photo gets 512x512 and a 3:2 one 640x384 (or 576x448 when too small for that); at
resolution 64 every image gets 64x64. An image too small for 64x64 within the upscale limit gets no bucket,
and ingest rejects it with that reason.
"""

from __future__ import annotations

import math

import numpy as np

STEP = 64

Bucket = tuple[int, int]


def assign(width: int, height: int, resolution: int, max_upscale: float = 1.0) -> Bucket | None:
    """The bucket of a width x height image, or None when not even STEP x STEP fits."""
    area = resolution * resolution
    # Bucket sides the upscale limit allows (the small epsilon keeps 1.0 * 640 from flooring to 576).
    max_w = math.floor(width * max_upscale / STEP + 1e-9) * STEP
    max_h = math.floor(height * max_upscale / STEP + 1e-9) * STEP
    widths = np.arange(STEP, min(max_w, area // STEP) + 1, STEP)
    if widths.size == 0:
        return None
    heights = np.minimum(area // widths // STEP * STEP, max_h)
    # Maximal: the next width step has a smaller tallest height (else this bucket could simply be wider).
    maximal = heights > np.append(heights[1:], -1)
    widths, heights = widths[maximal & (heights >= STEP)], heights[maximal & (heights >= STEP)]
    if widths.size == 0:
        return None
    mismatch = np.abs(np.log(widths / heights) - math.log(width / height))
    best = np.lexsort((-(widths * heights), np.round(mismatch, 9)))[0]
    return int(widths[best]), int(heights[best])


def label(bucket: Bucket) -> str:
    return f"{bucket[0]}x{bucket[1]}"
