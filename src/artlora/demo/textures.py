"""A procedural family of textures the pretrained tiny base's VAE learns to carry: "texture patches".

The toy scenes (`toy_scenes`) are flat shapes on simple grounds; a VAE trained on them alone blurs fine lines,
dots and hard edges into noise. These patches are made of exactly such detail, at random scales, angles and
colours: parallel lines and cross-hatching, dot fields (on a lattice or scattered, in one colour or many), tiles
and grids, hard-edged polygons and thresholded blobs, soft washes, rings and waves, and noise. Each image stacks
a few such layers on a ground and is painted at twice its size, then resampled down with a randomly chosen
filter (as a view of a larger image is).

The family holds none of the demo's art styles: no painter, palette or composition of `sample_data` is used
here, and colours are drawn at random in RGB, so the five demo styles stay unseen by the base. There are no
captions: only the VAE trains on these.

Every image is painted from numpy.random.default_rng((seed, index, 7)), so any image can be made again alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

SUPER = 2  # painted at twice the size, then resampled down
_FILTERS = (Image.Resampling.BOX, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)

Layer = Callable[[np.random.Generator, int], np.ndarray]  # (rng, side) -> alpha [side, side] in [0, 1]


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour: mostly anywhere in RGB, sometimes near black or white, as inks and papers are."""
    draw = rng.random()
    if draw < 0.15:
        return rng.uniform(0, 50, 3)
    if draw < 0.3:
        return rng.uniform(205, 255, 3)
    return rng.uniform(0, 255, 3)


def _coords(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle about a random origin."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float64) + 0.5
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    x, y = x - rng.uniform(0, side), y - rng.uniform(0, side)
    return x * c + y * s, -x * s + y * c


def _smooth(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] (a small random grid upsampled bilinearly)."""
    coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32), "F")
    field = np.asarray(coarse.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float64)
    return (field - field.min()) / (field.max() - field.min() + 1e-9)


def _edge(value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 step at 0 (hard edge), or a soft one a pixel or two wide."""
    if rng.random() < 0.6:
        return (value > 0).astype(np.float64)
    return np.clip(0.5 + value / rng.uniform(0.5, 2.5), 0, 1)


def lines(rng: np.random.Generator, side: int) -> np.ndarray:
    """Parallel lines at a random angle, period 3-40 px at the painted size, 10-60% of it wide."""
    u, _ = _coords(rng, side)
    period = np.exp(rng.uniform(np.log(3), np.log(40)))
    duty = rng.uniform(0.1, 0.6)
    if rng.random() < 0.3:  # wavy lines
        _, v = _coords(rng, side)
        u = u + rng.uniform(1, 8) * np.sin(v * rng.uniform(0.02, 0.2))
    phase = (u / period) % 1.0
    return _edge((duty / 2 - np.abs(phase - 0.5)) * period, rng)


def hatching(rng: np.random.Generator, side: int) -> np.ndarray:
    """Two or three sets of lines crossing."""
    alpha = lines(rng, side)
    for _ in range(rng.integers(1, 3)):
        alpha = np.maximum(alpha, lines(rng, side))
    return alpha


def _dot_cells(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Round dots, one per cell of a (possibly rotated) lattice, jittered or not, of varying radius: (alpha,
    a number in [0, 1) per dot, from a hash of its cell, so each cell has its own draw without a loop)."""
    u, v = _coords(rng, side)
    period = np.exp(rng.uniform(np.log(3), np.log(28)))
    jitter = rng.uniform(0, 0.45) if rng.random() < 0.6 else 0.0
    iu, iv = np.floor(u / period), np.floor(v / period)
    h = np.sin(iu * 12.9898 + iv * 78.233 + rng.uniform(0, 100)) * 43758.5453
    h1, h2 = h % 1.0, (h * 1.618) % 1.0
    cu, cv = (iu + 0.5 + jitter * (h1 - 0.5)) * period, (iv + 0.5 + jitter * (h2 - 0.5)) * period
    radius = period * rng.uniform(0.15, 0.45) * (1 + rng.uniform(0, 0.5) * (h1 - 0.5))
    return _edge(radius - np.hypot(u - cu, v - cv), rng), (h * 2.718) % 1.0


def dots(rng: np.random.Generator, side: int) -> np.ndarray:
    """A field of round dots in one colour."""
    return _dot_cells(rng, side)[0]


def confetti(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Two or three overlapping dot fields, each dot in one of a few random colours: (alpha, colours)."""
    colours = np.stack([_colour(rng) for _ in range(rng.integers(2, 7))])
    alpha, rgb = np.zeros((side, side)), np.zeros((side, side, 3))
    for _ in range(rng.integers(1, 4)):
        mask, draw = _dot_cells(rng, side)
        rgb = rgb * (1 - mask[..., None]) + colours[(draw * len(colours)).astype(int)] * mask[..., None]
        alpha = np.maximum(alpha, mask)
    return alpha, rgb


def tiles(rng: np.random.Generator, side: int) -> np.ndarray:
    """A checkerboard or a brick/tile pattern with grout lines, in random cell sizes."""
    u, v = _coords(rng, side)
    cu, cv = np.exp(rng.uniform(np.log(4), np.log(48), 2))
    if rng.random() < 0.5:
        iu, iv = np.floor(u / cu), np.floor(v / cv)
        return ((iu + iv) % 2 == 0).astype(np.float64)
    offset = np.floor(v / cv) % 2 * 0.5 * (rng.random() < 0.5)
    fu, fv = (u / cu + offset) % 1.0, (v / cv) % 1.0
    grout = rng.uniform(0.05, 0.25)
    dist = np.minimum(np.minimum(fu, 1 - fu) * cu, np.minimum(fv, 1 - fv) * cv)
    return _edge(grout * min(cu, cv) / 2 - dist, rng)


def waves(rng: np.random.Generator, side: int) -> np.ndarray:
    """Concentric rings or interfering waves, thresholded or smooth."""
    u, v = _coords(rng, side)
    period = np.exp(rng.uniform(np.log(4), np.log(40)))
    if rng.random() < 0.5:
        field = np.sin(2 * np.pi * np.hypot(u, v) / period)
    else:
        field = np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period * rng.uniform(0.5, 2))
    if rng.random() < 0.5:
        return (field + 1) / 2
    return _edge(field * period / 6, rng)


def polygons(rng: np.random.Generator, side: int) -> np.ndarray:
    """A few hard-edged random polygons and ellipses, large or small."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(rng.integers(1, 7)):
        cx, cy = rng.uniform(0, side, 2)
        r = side * np.exp(rng.uniform(np.log(0.03), np.log(0.5)))
        if rng.random() < 0.3:
            draw.ellipse((cx - r, cy - r * rng.uniform(0.3, 1), cx + r, cy + r), fill=255)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 8)))
            radii = r * rng.uniform(0.4, 1.0, len(angles))
            draw.polygon([(cx + q * np.cos(a), cy + q * np.sin(a)) for q, a in zip(radii, angles, strict=True)], 255)
    return np.asarray(mask, dtype=np.float64) / 255


def blobs(rng: np.random.Generator, side: int) -> np.ndarray:
    """Noise thresholded into hard-edged blobs, or left as a soft multi-scale cloud."""
    octaves = rng.integers(3, 40, rng.integers(1, 4))
    field = np.asarray(sum(_smooth(rng, side, int(c)) / (i + 1) for i, c in enumerate(octaves)))
    field = (field - field.min()) / (field.max() - field.min() + 1e-9)
    if rng.random() < 0.6:
        return _edge((field - rng.uniform(0.3, 0.7)) * rng.uniform(10, 60), rng)
    return field


def grain(rng: np.random.Generator, side: int) -> np.ndarray:
    """Pixel-level noise (sparse speckles or dense grain)."""
    if rng.random() < 0.5:
        return (rng.random((side, side)) < rng.uniform(0.02, 0.3)).astype(np.float64)
    return rng.random((side, side)) * rng.uniform(0.2, 1.0)


LAYERS: tuple[Layer, ...] = (lines, hatching, dots, tiles, waves, polygons, blobs, grain)


def _ground(rng: np.random.Generator, side: int) -> np.ndarray:
    """A plain ground, a gradient or a soft wash of two colours."""
    a, b = _colour(rng), _colour(rng)
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(a, (side, side, 3)).copy()
    if kind == 1:
        u, _ = _coords(rng, side)
        t = (u - u.min()) / (u.max() - u.min())
    else:
        t = _smooth(rng, side, int(rng.integers(2, 8)))
    return a + (b - a) * t[..., None]


def render(index: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Patch `index`: uint8 [size, size, 3]."""
    rng = np.random.default_rng((seed, index, 7))
    side = size * SUPER
    img = _ground(rng, side)
    for _ in range(rng.integers(1, 4)):
        if rng.random() < 0.15:  # dots of many colours
            alpha, colour = confetti(rng, side)
        else:
            alpha, colour = LAYERS[rng.integers(len(LAYERS))](rng, side), _colour(rng)
        if rng.random() < 0.3:  # a layer confined to a region: edges between textures
            alpha = alpha * (_smooth(rng, side, int(rng.integers(2, 5))) > rng.uniform(0.3, 0.7))
        if rng.random() < 0.2:  # colour varying across the layer, as broken colour does
            colour = colour + (_smooth(rng, side, int(rng.integers(4, 30)))[..., None] - 0.5) * rng.uniform(40, 160)
        img = img * (1 - alpha[..., None]) + colour * alpha[..., None]
    img = np.clip(img, 0, 255).astype(np.float32)
    channels = [Image.fromarray(img[..., c], "F") for c in range(3)]
    resample = _FILTERS[rng.integers(len(_FILTERS))]
    small = np.stack([np.asarray(ch.resize((size, size), resample)) for ch in channels], -1)
    small = small + rng.normal(0, rng.uniform(0, 3), (size, size, 1))
    return np.clip(small + 0.5, 0, 255).astype(np.uint8)


def dataset(count: int, size: int = 64, seed: int = 0, start: int = 0) -> np.ndarray:
    """Patches start..start+count: uint8 [count, size, size, 3]."""
    return np.stack([render(index, size, seed) for index in range(start, start + count)])
