"""What ingest needs to know about one image file, measured once and cached by the file's content hash.

An outcome is a JSON-able dict (kept in the scan index), one of:
- a failure: {"code": "empty" | "not_image" | "unreadable" | "too_many_pixels", "reason": "..."};
- a header only, for an image with more pixels than the limit it was scanned under (never decoded):
  {"format", "mode", "width", "height", "decoded": False};
- a measurement: {"format", "mode", "width", "height", "decoded": True, "phash": "<16 hex digits>", "blur": ...}.
Width and height are the upright (EXIF-transposed) size. An outcome holds measurements, not verdicts: judging
them against the curation settings is curation's job, so changing a threshold never needs a file decoded again.
"""

from __future__ import annotations

import math
import re
from typing import Any

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

from artlora.data import images

# Bump when a measurement changes (decoding, hash, blur score): outcomes cached by older code are then ignored.
MEASURE_VERSION = 1
# Blur and the perceptual hash are measured on the grey image scaled down to at most this many pixels, so the
# blur score means the same at any resolution, about the scale the image is trained at.
MEASURE_AREA = 512 * 512
FAILURES = ("empty", "not_image", "unreadable", "too_many_pixels")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

Outcome = dict[str, Any]


def failure(code: str, reason: str) -> Outcome:
    return {"code": code, "reason": _ADDRESS.sub("", reason)}  # reports must not differ by memory addresses


def inspect(data: bytes, background: images.RGB, max_pixels: int) -> Outcome:
    """Decode and measure one file's bytes; any decoder error is a failure outcome, never an exception."""
    if not data:
        return failure("empty", "empty file (0 bytes)")
    try:
        image = images.open_image(data)
    except Image.DecompressionBombError as err:
        return failure("too_many_pixels", f"too many pixels (decompression-bomb guard): {err}")
    except UnidentifiedImageError:
        names = ", ".join(images.FORMATS)
        return failure("not_image", f"not an image, or its header is damaged: none of {names} recognised")
    except Exception as err:  # noqa: BLE001 - a broken header takes many shapes; each is a rejection
        return failure("unreadable", f"unreadable image header: {type(err).__name__}: {err}")
    width, height = images.oriented_size(image)
    header = {"format": image.format, "mode": image.mode, "width": width, "height": height}
    if width * height > max_pixels:
        return {**header, "decoded": False}
    try:
        rgb = images.to_rgb(image, background)
    except Exception as err:  # noqa: BLE001 - truncated and corrupt data: a rejection with the decoder's words
        return failure("unreadable", f"unreadable or truncated {image.format} image: {type(err).__name__}: {err}")
    return {**header, "decoded": True, **measure(rgb)}


def measure(rgb: Image.Image) -> Outcome:
    """Perceptual hash (64 bits, hex) and blur score (variance of the Laplacian) of an RGB image."""
    grey = rgb.convert("L")
    scale = math.sqrt(MEASURE_AREA / (grey.width * grey.height))
    if scale < 1:
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.BOX)
    return {"phash": str(imagehash.phash(grey)), "blur": round(laplacian_variance(np.asarray(grey)), 3)}


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low when an image has few sharp edges (0 for a tiny image)."""
    if min(grey.shape) < 3:
        return 0.0
    g = grey.astype(np.float32)
    laplacian = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(laplacian.var())
