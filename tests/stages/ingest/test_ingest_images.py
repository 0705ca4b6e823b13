"""Decoding (artlora.data.images) and measuring (artlora.stages.ingest.inspection) one file: every format and
colour mode ingest accepts, written by Pillow (or by hand where Pillow cannot write it), decoded to upright 8-bit
RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from image_files import png_rgb16
from PIL import Image, ImageFilter

from artlora.data import images
from artlora.stages.ingest import inspection

BACKGROUND = (10, 200, 30)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def half_transparent(mode: str) -> Image.Image:
    """Left half opaque red (or grey), right half fully transparent."""
    image = Image.new("RGBA", (8, 4), (200, 0, 0, 255))
    image.paste((0, 0, 255, 0), (4, 0, 8, 4))
    return image.convert(mode)


@pytest.mark.parametrize(
    ("name", "data", "opaque"),
    [
        ("RGBA PNG", encode(half_transparent("RGBA"), "PNG"), (200, 0, 0)),
        ("LA PNG", encode(half_transparent("LA"), "PNG"), None),
        ("RGBA WebP", encode(half_transparent("RGBA"), "WEBP", lossless=True), (200, 0, 0)),
        ("P+tRNS PNG", encode(half_transparent("RGBA").quantize(4), "PNG"), None),
        ("RGBA GIF", encode(half_transparent("RGBA"), "GIF"), None),
    ],
)
def test_transparency_is_composited_on_the_background(name, data, opaque):
    rgb = images.open_rgb(data, BACKGROUND)
    assert rgb.mode == "RGB" and rgb.size == (8, 4), name
    assert rgb.getpixel((6, 2)) == BACKGROUND, name
    if opaque is not None:
        assert rgb.getpixel((1, 1)) == opaque, name
    assert images.open_rgb(data).getpixel((6, 2)) == (255, 255, 255), "white by default"


def test_16_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    for fmt in ("PNG", "TIFF"):
        data = encode(Image.fromarray(values), fmt)
        assert images.open_image(data).mode == "I;16"
        assert [p[0] for p in np.asarray(images.open_rgb(data))[0]] == [0, 1, 128, 255], fmt


def test_16_bit_rgb_png():
    values = np.zeros((2, 3, 3), dtype=np.uint16)
    values[0, 0] = (65535, 32768, 0)
    rgb = images.open_rgb(png_rgb16(values))
    assert rgb.size == (3, 2) and rgb.getpixel((0, 0)) == (255, 128, 0)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(fmt):
    source = Image.new("RGB", (16, 16), (200, 40, 40))
    rgb = images.open_rgb(encode(source.convert("CMYK"), fmt))
    assert rgb.mode == "RGB"
    assert np.abs(np.asarray(rgb, dtype=int) - (200, 40, 40)).max() < 12


@pytest.mark.parametrize("mode", ["L", "1", "P", "I", "F"])
def test_other_modes_become_rgb(mode):
    grey = Image.new("L", (8, 8), 0)
    grey.paste(255, (0, 0, 4, 8))
    image = grey.convert(mode) if mode != "I" else Image.fromarray(np.asarray(grey).astype(np.int32) * 257)
    fmt = "TIFF" if mode in ("I", "F") else "PNG"
    rgb = images.open_rgb(encode(image, fmt))
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((7, 0)) == (0, 0, 0)


def test_gif_first_frame_is_taken():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert images.open_image(data).n_frames == 2
    assert images.open_rgb(data).getpixel((4, 4)) == (255, 0, 0)


def test_exif_orientation_is_applied_to_size_and_pixels():
    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(stored, "PNG", exif=exif)
    assert images.oriented_size(images.open_image(data)) == (20, 40)
    upright = images.open_rgb(data)
    assert upright.size == (20, 40)
    assert upright.getpixel((10, 2))[0] > 200 and upright.getpixel((10, 38))[0] < 50  # the band is now on top


def test_formats_outside_the_list_are_not_opened_whatever_the_name():
    icon = encode(Image.new("RGB", (16, 16), (1, 2, 3)), "ICO")
    with pytest.raises(Image.UnidentifiedImageError):
        images.open_image(icon)
    assert inspection.inspect(icon, images.WHITE, 10**6)["code"] == "not_image"


# -- inspection outcomes -------------------------------------------------------------------------------


def texture(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_inspect_measures_a_good_image():
    data = encode(texture((96, 64)), "PNG")
    outcome = inspection.inspect(data, images.WHITE, 10**6)
    assert {k: outcome[k] for k in ("format", "mode", "width", "height", "decoded")} == {
        "format": "PNG",
        "mode": "RGB",
        "width": 96,
        "height": 64,
        "decoded": True,
    }
    assert len(outcome["phash"]) == 16 and outcome["blur"] > 1000


def test_blur_score_is_low_for_a_blurred_image_and_independent_of_resolution():
    sharp = texture((256, 256))
    blurred = sharp.filter(ImageFilter.GaussianBlur(6))
    score = lambda image: inspection.inspect(encode(image, "PNG"), images.WHITE, 10**7)["blur"]  # noqa: E731
    assert score(blurred) < 5 < 1000 < score(sharp)
    # A 4x larger copy is measured at about the same scale (at most 512x512 px of area).
    big = blurred.resize((1024, 1024), Image.Resampling.BICUBIC)
    assert abs(score(big) - score(blurred.resize((512, 512), Image.Resampling.BICUBIC))) < 1


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"", "empty", "0 bytes"),
        (b"just some text\n", "not_image", "not an image"),
        (encode(texture((64, 64)), "PNG")[:30], "not_image", "damaged"),
        (encode(texture((64, 64)), "PNG")[:-200], "unreadable", "truncated"),
        (encode(texture((64, 64)), "JPEG")[:600], "unreadable", "truncated"),
    ],
    ids=["empty", "text", "header cut", "png cut", "jpeg cut"],
)
def test_inspect_failures_have_a_code_and_a_reason(data, code, words):
    outcome = inspection.inspect(data, images.WHITE, 10**6)
    assert outcome["code"] == code and words in outcome["reason"].lower(), outcome
    assert "0x" not in outcome["reason"], "no memory addresses in reasons"


def test_an_image_over_the_pixel_limit_is_not_decoded():
    outcome = inspection.inspect(encode(texture((100, 50)), "PNG"), images.WHITE, 4999)
    assert outcome == {"format": "PNG", "mode": "RGB", "width": 100, "height": 50, "decoded": False}
