"""Pictures as data URIs, so a page carries its images inside it."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png(image: Image.Image | np.ndarray, scale: int = 2) -> str:
    """A PNG data URI of the image, enlarged `scale` times without smoothing (tiny test images stay legible)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return data_uri(buffer.getvalue(), "image/png")


def strip(images: np.ndarray | list[np.ndarray], count: int | None = None, scale: int = 2) -> str:
    """Images (uint8 [n, h, w, 3]) side by side in one PNG data URI; empty when there are none."""
    chosen = list(images[:count])
    return png(np.concatenate(chosen, axis=1), scale) if chosen else ""
