"""The generic procedural image family the pretrained tiny base learns to paint: "toy scenes".

A scene is a background (plain, two-colour gradient, stripes, checks, dots on a ground, or a mottled wash)
with zero to two flat objects on it (circle, square, triangle, ring, cross, bar), each colour named in the
caption, e.g. "a large red circle and a small blue ring on yellow and white stripes". No art-style words: the
five demo styles (pointillist, geometric, op art, watercolour, woodcut) are left for LoRAs to learn.

Every image is painted from numpy.random.default_rng((seed, index)), so any image can be made again alone.
Shapes are drawn at 4x and downsampled (antialiased edges).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 215, 50),
    "green": (60, 160, 70),
    "teal": (30, 140, 140),
    "blue": (40, 80, 200),
    "purple": (130, 60, 170),
    "pink": (240, 140, 180),
    "brown": (120, 75, 40),
    "grey": (128, 128, 128),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
}
NAMES = tuple(COLOURS)
SHAPES = ("circle", "square", "triangle", "ring", "cross", "bar")
BACKGROUNDS = ("plain", "gradient", "stripes", "checks", "dots", "mottled")
# Every word a caption can hold (the word tokenizer gives each its own token).
WORDS = (
    "a",
    "and",
    "on",
    "to",
    "with",
    "large",
    "small",
    "background",
    "gradient",
    "stripes",
    "checks",
    "dots",
    "mottled",
    "wash",
    *COLOURS,
    *SHAPES,
)
SUPER = 4  # supersampling factor for antialiased shapes


def _two_colours(rng: np.random.Generator) -> tuple[str, str]:
    a, b = rng.choice(len(NAMES), 2, replace=False)
    return NAMES[a], NAMES[b]


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32), "F")
    field = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    return (field - field.min()) / (field.max() - field.min() + 1e-9)


def _background(rng: np.random.Generator, size: int, kinds) -> tuple[np.ndarray, str, set[str]]:
    """(pixels [size, size, 3] float 0-255, caption phrase, colour names used)."""
    kind = kinds[rng.integers(len(kinds))]
    c1, c2 = _two_colours(rng)
    a, b = np.array(COLOURS[c1], float), np.array(COLOURS[c2], float)
    y, x = np.mgrid[0:size, 0:size] / size
    if kind == "plain":
        return np.broadcast_to(a, (size, size, 3)).copy(), f"on a {c1} background", {c1}
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle)
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
        return a + (b - a) * ramp[..., None], f"on a {c1} to {c2} gradient", {c1, c2}
    if kind == "stripes":
        angle, freq = rng.uniform(0, np.pi), rng.uniform(3, 14)
        phase = (x * np.cos(angle) + y * np.sin(angle)) * freq + rng.uniform()
        mask = (phase % 1.0) < 0.5
        return np.where(mask[..., None], a, b), f"on {c1} and {c2} stripes", {c1, c2}
    if kind == "checks":
        cells = rng.integers(3, 13)
        mask = ((np.floor(x * cells) + np.floor(y * cells)) % 2) == 0
        return np.where(mask[..., None], a, b), f"on {c1} and {c2} checks", {c1, c2}
    if kind == "dots":
        img = np.broadcast_to(a, (size, size, 3)).copy()
        radius = rng.uniform(0.8, 3.0)
        count = int(rng.uniform(0.15, 0.35) * size * size / (np.pi * radius**2))
        ys, xs = rng.uniform(0, size, count), rng.uniform(0, size, count)
        yy, xx = np.mgrid[0:size, 0:size] + 0.5
        # Nearest dot centre per pixel via a coarse splat: cheap enough at 64 px.
        mask = np.zeros((size, size), bool)
        r = int(np.ceil(radius))
        for cy, cx in zip(ys, xs, strict=True):
            y0, y1, x0, x1 = (
                max(0, int(cy) - r),
                min(size, int(cy) + r + 1),
                max(0, int(cx) - r),
                min(size, int(cx) + r + 1),
            )
            mask[y0:y1, x0:x1] |= np.hypot(yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx) <= radius
        img[mask] = b
        return img, f"on {c1} with {c2} dots", {c1, c2}
    # mottled: a soft wash of two colours
    field = _smooth(rng, size, int(rng.integers(3, 7)))
    return a + (b - a) * field[..., None], f"on a mottled {c1} and {c2} wash", {c1, c2}


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float, fill) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        draw.ellipse((cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r), fill=0)
    elif shape in ("square", "triangle"):
        corners = 4 if shape == "square" else 3
        angles = angle + np.arange(corners) * 2 * np.pi / corners
        scale = r * (1.25 if shape == "square" else 1.2)
        draw.polygon([(cx + scale * np.cos(t), cy + scale * np.sin(t)) for t in angles], fill=fill)
    elif shape == "cross":
        w = 0.33 * r
        for t in (angle, angle + np.pi / 2):
            c, s = np.cos(t), np.sin(t)
            pts = [(-r, -w), (r, -w), (r, w), (-r, w)]
            draw.polygon([(cx + px * c - py * s, cy + px * s + py * c) for px, py in pts], fill=fill)
    else:  # bar
        w = 0.3 * r
        c, s = np.cos(angle), np.sin(angle)
        pts = [(-1.3 * r, -w), (1.3 * r, -w), (1.3 * r, w), (-1.3 * r, w)]
        draw.polygon([(cx + px * c - py * s, cy + px * s + py * c) for px, py in pts], fill=fill)


def render(
    index: int, size: int = 64, seed: int = 0, backgrounds=BACKGROUNDS, shapes=SHAPES, counts=(0.15, 0.55, 0.3)
) -> tuple[np.ndarray, str]:
    """Scene `index`: (uint8 [size, size, 3], caption); `counts` are the chances of 0, 1, 2... objects."""
    rng = np.random.default_rng((seed, index))
    img, bg_phrase, used = _background(rng, size, backgrounds)
    count = int(rng.choice(len(counts), p=counts))
    phrases = []
    big = size * SUPER
    for _ in range(count):
        name = NAMES[rng.choice([i for i, n in enumerate(NAMES) if n not in used])]
        used.add(name)
        shape = shapes[rng.integers(len(shapes))]
        large = rng.random() < 0.5
        r = (rng.uniform(0.22, 0.32) if large else rng.uniform(0.1, 0.16)) * big
        cx, cy = rng.uniform(r, big - r), rng.uniform(r, big - r)
        mask = Image.new("L", (big, big), 0)
        _draw_shape(ImageDraw.Draw(mask), shape, cx, cy, r, rng.uniform(0, 2 * np.pi), 255)
        alpha = np.asarray(mask.resize((size, size), Image.Resampling.BOX), float)[..., None] / 255.0
        img = img * (1 - alpha) + np.array(COLOURS[name], float) * alpha
        phrases.append(f"a {'large' if large else 'small'} {name} {shape}")
    caption = (" and ".join(phrases) + " " + bg_phrase) if phrases else bg_phrase.removeprefix("on ")
    img = img + rng.normal(0, 2.0, (size, size, 1))  # a little grain, as no real ground is flat
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), caption


def dataset(count: int, size: int = 64, seed: int = 0, start: int = 0, **options) -> tuple[np.ndarray, list[str]]:
    """Scenes start..start+count: (uint8 [count, size, size, 3], captions)."""
    images, captions = [], []
    for index in range(start, start + count):
        image, caption = render(index, size, seed, **options)
        images.append(image)
        captions.append(caption)
    return np.stack(images), captions
