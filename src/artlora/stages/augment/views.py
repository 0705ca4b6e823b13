"""Augmented views of one image, made at exactly its bucket's size with torchvision.transforms.v2.

A view is: a random crop of the bucket's aspect ratio (a share of the largest such crop, `crop_scale`), resized
to the bucket; a small rotation whose corners are never empty (the crop is resized a little larger, rotated,
then centre-cropped to the bucket); a horizontal flip; colour jitter (brightness, contrast, saturation, hue, in a
random order). Each can be switched off in `AugmentConfig`.

All randomness of view `i` of an image comes from one generator seeded by (seed, image content hash, i), and is
drawn before any pixel is touched (`draw_params`), so any view can be made again alone, on any machine, and the
global torch RNG is never used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from artlora.config import AugmentConfig
from artlora.data.digests import digest

Bucket = tuple[int, int]  # (width, height) in pixels


def item_bucket(item: object, resolution: int) -> Bucket:
    """The item's bucket from ingest; a square of `resolution` for manifests written before ingest had buckets."""
    bucket = getattr(item, "bucket", None) or (resolution, resolution)
    width, height = (int(side) for side in bucket)
    return width, height


@dataclass(frozen=True)
class ViewParams:
    """Everything random about one view."""

    crop: tuple[int, int, int, int]  # top, left, height, width of the crop in the source image, in pixels
    angle: float  # rotation in degrees, counter-clockwise
    flip: bool
    jitter: tuple[tuple[str, float], ...]  # (adjustment, factor) in the order they are applied


def view_generator(seed: int, image_sha256: str, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(digest(seed, image_sha256, index)[:15], 16))


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=gen).item()


def crop_box(
    gen: torch.Generator, scale: tuple[float, float], size: tuple[int, int], bucket: Bucket
) -> tuple[int, int, int, int]:
    """A crop of the bucket's aspect ratio covering a random share (of area) of the largest one that fits.

    `scale == (1, 1)` turns random cropping off: the largest centred crop of the bucket's shape.
    """
    width, height = size
    aspect = bucket[0] / bucket[1]
    full_w, full_h = (height * aspect, height) if width / height > aspect else (width, width / aspect)
    side = math.sqrt(_uniform(gen, *scale))
    crop_w = min(width, max(1, round(full_w * side)))
    crop_h = min(height, max(1, round(full_h * side)))
    if scale == (1.0, 1.0):
        return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w
    top = int(torch.randint(0, height - crop_h + 1, (), generator=gen))
    left = int(torch.randint(0, width - crop_w + 1, (), generator=gen))
    return top, left, crop_h, crop_w


def jitter_params(gen: torch.Generator, config: AugmentConfig) -> tuple[tuple[str, float], ...]:
    """ColorJitter's draws: a factor in [1 - s, 1 + s] (hue: a shift in [-h, h]) per enabled adjustment."""
    ranges = {
        "brightness": (max(0.0, 1 - config.brightness), 1 + config.brightness),
        "contrast": (max(0.0, 1 - config.contrast), 1 + config.contrast),
        "saturation": (max(0.0, 1 - config.saturation), 1 + config.saturation),
        "hue": (-config.hue, config.hue),
    }
    enabled = [name for name in ranges if getattr(config, name) > 0]
    order = torch.randperm(len(enabled), generator=gen).tolist()
    return tuple((enabled[i], _uniform(gen, *ranges[enabled[i]])) for i in order)


def draw_params(gen: torch.Generator, config: AugmentConfig, size: tuple[int, int], bucket: Bucket) -> ViewParams:
    """Every random choice of one view, from `gen` alone, in a fixed order."""
    crop = crop_box(gen, config.crop_scale, size, bucket)
    angle = _uniform(gen, -config.rotation_degrees, config.rotation_degrees) if config.rotation_degrees else 0.0
    flip = bool(torch.rand((), generator=gen) < 0.5) if config.hflip else False
    return ViewParams(crop, angle, flip, jitter_params(gen, config))


def rotation_canvas(bucket: Bucket, degrees: float) -> tuple[int, int]:
    """(height, width) to rotate at so that the centred bucket-sized crop of the result has no empty corners.

    The bucket rotated by the angle has a bounding box of (w cos + h sin) x (w sin + h cos); scaling the canvas
    uniformly until it holds that box keeps the aspect ratio. Two pixels more keep bilinear sampling off the edge.
    """
    width, height = bucket
    if not degrees:
        return height, width
    cos, sin = math.cos(math.radians(abs(degrees))), math.sin(math.radians(abs(degrees)))
    factor = max(cos + sin * height / width, cos + sin * width / height)
    return math.ceil(height * factor) + 2, math.ceil(width * factor) + 2


def render(image: torch.Tensor, params: ViewParams, bucket: Bucket) -> torch.Tensor:
    """One view of a uint8 [3, h, w] image as float [3, bucket h, bucket w] in [-1, 1]."""
    width, height = bucket
    canvas = rotation_canvas(bucket, params.angle)
    view = F.resized_crop(image, *params.crop, size=list(canvas), antialias=True)
    view = F.to_dtype(view, torch.float32, scale=True)
    if params.angle:
        view = F.rotate(view, params.angle, interpolation=InterpolationMode.BILINEAR)
        view = F.center_crop(view, [height, width])
    if params.flip:
        view = F.hflip(view)
    for name, factor in params.jitter:
        view = _ADJUST[name](view, factor)
    return view * 2 - 1


_ADJUST = {
    "brightness": F.adjust_brightness,
    "contrast": F.adjust_contrast,
    "saturation": F.adjust_saturation,
    "hue": F.adjust_hue,
}


def time_ids(size: tuple[int, int], image_sha256: str, config: AugmentConfig, bucket: Bucket) -> list[list[int]]:
    """SDXL's size and crop conditioning per view, [original h, original w, crop top, crop left, target h,
    target w]: the source image's size, the crop's top-left corner in the coordinates of the image resized as
    the crop was (so the crop is bucket-sized), and the bucket. Drawn as `make_views` draws, without pixels."""
    width, height = bucket
    out = []
    for index in range(config.views_per_image):
        params = draw_params(view_generator(config.seed, image_sha256, index), config, size, bucket)
        top, left, crop_h, crop_w = params.crop
        out.append([size[1], size[0], round(top * height / crop_h), round(left * width / crop_w), height, width])
    return out


def make_views(image: Image.Image, image_sha256: str, config: AugmentConfig, bucket: Bucket) -> torch.Tensor:
    """The `views_per_image` views of one image, [views, 3, height, width], view i seeded by (seed, image, i)."""
    pixels = F.pil_to_tensor(image)
    views = []
    for index in range(config.views_per_image):
        params = draw_params(view_generator(config.seed, image_sha256, index), config, image.size, bucket)
        views.append(render(pixels, params, bucket))
    return torch.stack(views)
