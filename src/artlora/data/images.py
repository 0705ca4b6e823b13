"""Image files to RGB pictures, the same way in every stage.

Ingest measures, and augment trains on, exactly what `open_rgb` returns: the first frame (GIF, animated WebP,
multi-page TIFF), EXIF orientation applied, any colour mode brought to 8-bit RGB, transparency composited on a
background colour. The dataset keeps the original bytes, so this is the one place that decides how they look.

Only the formats in `FORMATS` are opened, whatever a file's name says: a smaller attack surface than every
decoder Pillow has, and the formats artwork actually comes in.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)
# JPEG includes MPO, what phone cameras write into .jpg files (a JPEG with extra frames).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
# EXIF orientation (tag 0x0112) -> the transpose that undoes it (as ImageOps.exif_transpose does).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

# Callers decide how many pixels they accept (ingest's max_pixels guard, checked on the header before any
# decoding); Pillow's own warning would only repeat that. Its hard error, at twice its limit, still applies.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
Image.init()  # registers every format plugin; Image.open(formats=...) only looks among the registered ones


def open_image(data: bytes) -> Image.Image:
    """Open the bytes lazily (header only: size and mode are known, no pixel is decoded yet).

    Raises PIL.UnidentifiedImageError when the bytes are none of `FORMATS`, Image.DecompressionBombError
    when the header claims more pixels than Pillow will ever decode.
    """
    return Image.open(io.BytesIO(data), formats=FORMATS)


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8), 1 when absent or unreadable (a broken EXIF block is not a broken image)."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF comes in every shape; it only costs the orientation
        return 1
    return value if value in _TRANSPOSE else 1


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as the picture is meant to be seen, from the header alone."""
    width, height = image.size
    return (height, width) if orientation(image) in (5, 6, 7, 8) else (width, height)


def to_rgb(image: Image.Image, background: RGB = WHITE) -> Image.Image:
    """Decode the first frame of an opened image to upright 8-bit RGB. Raises on truncated or corrupt data."""
    turn = _TRANSPOSE.get(orientation(image))
    image.seek(0)
    image.load()
    image = _eight_bit(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, background)
        image.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return image.transpose(turn) if turn is not None else image


def open_rgb(data: bytes, background: RGB = WHITE) -> Image.Image:
    """The picture in an image file's bytes as upright 8-bit RGB; see the module docstring for the rules."""
    return to_rgb(open_image(data), background)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit (and 32-bit integer or float) greyscale scaled to 8 bits; Pillow's own conversion clips at 255."""
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image).astype(np.int64)
        return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8))
    if image.mode == "F":  # floating-point TIFF: Pillow's convention is the 0-255 range of "L"
        values = np.asarray(image)
        return Image.fromarray(np.clip(np.nan_to_num(values), 0, 255).astype(np.uint8))
    return image
