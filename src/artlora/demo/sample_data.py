"""Procedural "artworks" for demos and tests, because this project cannot download a real style dataset.

`generate` paints `count` small images spread round-robin over a few visibly different styles
(`STYLES`), and writes each as `<out_dir>/<style>/<style>_<index:04d>.png` with a one-line caption in a
`.txt` sidecar beside it. The styles differ in palette, texture and edge structure, so a style LoRA (or a
simple classifier in the tests) has something real to learn. Every texture (dots, stripes, hatching) is sized
relative to the image and coarse enough to survive at 64 px through a VAE that downsamples by 4 (the pretrained
tiny base's): a period of at least 8 pixels there, so a LoRA on that base can paint it. Woodcut hatching is
bolder still (a period of 14 to 21 pixels, lines at least 30% of it): thinner lines came back from that VAE as
pink and green noise, and nothing learned from them looked like a woodcut.

Every image is painted from its own `numpy.random.default_rng(seed + index)`: the same arguments give
byte-identical files, and `render` can redo any single image without painting the ones before it.
Everything is vectorised with numpy and Pillow, so 500 images at 128 px take a couple of seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from artlora.errors import ArtloraError


class SampleDataError(ArtloraError, ValueError):
    """An argument of the sample-data generator out of its range (a command-line value, or a caller's)."""


STYLES: tuple[str, ...] = ("pointillist", "geometric", "op_art", "watercolour", "woodcut")
MIN_SIZE = 32

# Colours are 0-255 RGB. Each style has a few named palettes; the name goes into the caption so that
# captions and pixels agree and a model can tie the words to the colours.
PALETTES: dict[str, dict[str, list[tuple[int, int, int]]]] = {
    "pointillist": {
        "warm": [(232, 120, 40), (245, 190, 60), (200, 60, 70), (120, 60, 150), (60, 110, 190)],
        "cool": [(40, 90, 190), (60, 160, 170), (90, 180, 90), (150, 90, 190), (240, 170, 70)],
        "sunlit": [(250, 210, 60), (240, 140, 50), (110, 170, 70), (70, 130, 200), (220, 80, 120)],
        "twilight": [(70, 60, 160), (150, 70, 160), (230, 110, 110), (250, 180, 90), (50, 130, 160)],
    },
    "geometric": {
        "primary": [(220, 30, 35), (250, 205, 20), (20, 60, 170), (245, 242, 235), (20, 20, 20)],
        "bauhaus": [(205, 60, 40), (235, 175, 30), (30, 95, 150), (235, 225, 205), (30, 30, 35)],
        "vivid": [(230, 40, 110), (20, 150, 140), (250, 140, 20), (240, 236, 225), (40, 40, 120)],
    },
    "op_art": {
        "black and white": [(10, 10, 10), (248, 248, 248)],
        "ink and ivory": [(22, 20, 26), (244, 240, 228)],
        "charcoal and silver": [(35, 35, 38), (234, 235, 237)],
    },
    "watercolour": {
        "blue": [(90, 140, 200), (130, 180, 210), (70, 110, 160), (180, 200, 150)],
        "rose": [(220, 110, 130), (240, 160, 150), (170, 90, 150), (250, 200, 120)],
        "spring": [(120, 190, 110), (230, 200, 90), (100, 160, 200), (220, 130, 140)],
        "autumn": [(210, 120, 60), (190, 70, 50), (220, 180, 80), (120, 120, 70)],
    },
    "woodcut": {
        "black": [(22, 18, 16)],
        "sepia": [(70, 40, 22)],
        "indigo": [(28, 34, 70)],
    },
}

SUBJECTS = (
    "a harbour at dusk",
    "a mountain village",
    "a bowl of fruit",
    "a busy city street",
    "a forest clearing",
    "a lighthouse on a cliff",
    "a field of sunflowers",
    "a cat asleep on a chair",
    "a river bend in spring",
    "a portrait of an old fisherman",
    "boats on a calm lake",
    "a windmill under clouds",
)

# Each style has a few caption shapes; {s} is the subject and {p} the palette name.
CAPTIONS: dict[str, tuple[str, ...]] = {
    "pointillist": (
        "a pointillist painting of {s}, dots of {p} colour",
        "{s} painted in pointillism, tiny {p} dots",
        "a neo-impressionist dot painting of {s}, {p} palette",
    ),
    "geometric": (
        "a geometric abstract painting of {s}, flat {p} shapes",
        "{s} as hard-edged geometric abstraction, {p} colours",
        "a Bauhaus-style composition of {s}, {p} rectangles and triangles",
    ),
    "op_art": (
        "an op art print of {s}, {p} optical pattern",
        "{s} in op art style, warped {p} lines",
        "an optical illusion artwork of {s}, {p} pattern",
    ),
    "watercolour": (
        "a watercolour painting of {s}, {p} washes",
        "{s} in loose watercolour, soft {p} tones",
        "a delicate watercolour sketch of {s}, {p} palette",
    ),
    "woodcut": (
        "a woodcut print of {s}, {p} ink on cream paper",
        "{s} as a woodblock print, bold {p} lines",
        "a linocut of {s}, {p} hatching",
    ),
}


def generate(
    out_dir: Path,
    count: int = 500,
    size: int = 128,
    seed: int = 0,
    styles: Sequence[str] = STYLES,
) -> list[Path]:
    """Write `count` images (and caption sidecars) round-robin over `styles`; return the image paths."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SampleDataError(f"count must be a positive integer, got {count!r}")
    styles = _check_styles(styles)
    _check_size(size)
    out_dir = Path(out_dir)
    paths = []
    for index in range(count):
        style = styles[index % len(styles)]
        image, caption = render(style, index, size=size, seed=seed)
        path = out_dir / style / f"{style}_{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Fixed settings and no extra chunks, so the bytes depend only on the pixels.
        image.save(path, format="PNG", optimize=False, compress_level=6)
        path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def render(style: str, index: int, size: int = 128, seed: int = 0) -> tuple[Image.Image, str]:
    """Paint image `index` of a `generate(seed=seed, size=size)` run in `style`: (RGB image, caption)."""
    if style not in STYLES:
        raise SampleDataError(f"style must be one of {STYLES}, got {style!r}")
    _check_size(size)
    # default_rng rejects negative seeds with a message that names neither argument.
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 or index < 0:
        raise SampleDataError(f"seed and index must be non-negative integers, got seed={seed!r}, index={index!r}")
    rng = np.random.default_rng(seed + index)
    palette_name = str(rng.choice(sorted(PALETTES[style])))
    palette = np.array(PALETTES[style][palette_name], dtype=np.float64)
    pixels = _PAINTERS[style](rng, size, palette)
    template = CAPTIONS[style][rng.integers(len(CAPTIONS[style]))]
    caption = template.format(s=SUBJECTS[rng.integers(len(SUBJECTS))], p=palette_name)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB"), caption


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise SampleDataError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")


def _check_styles(styles: Sequence[str]) -> tuple[str, ...]:
    # A bare string is a Sequence too; treating "op_art" as five one-letter styles would be a silent mistake.
    if isinstance(styles, str) or not styles:
        raise SampleDataError(f"styles must be a non-empty sequence of names from {STYLES}, got {styles!r}")
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        raise SampleDataError(f"styles has unknown style(s) {unknown}; choose from {STYLES}")
    if len(set(styles)) != len(styles):
        raise SampleDataError(f"styles has duplicates: {list(styles)}")
    return tuple(styles)


# ---- shared helpers -------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates in [0, 1), so every painter's geometry is independent of resolution."""
    y, x = np.mgrid[0:size, 0:size] / size
    return y, x


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random grid upsampled bicubically, far cheaper than Perlin."""
    coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32), "F")
    field = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo + 1e-9)


def _profile(rng: np.random.Generator, size: int, points: int) -> np.ndarray:
    """A wandering 1-D curve in [0, 1] across the width (horizons, hill lines)."""
    knots = rng.random(points + 1)
    return np.interp(np.linspace(0, points, size), np.arange(points + 1), knots)


def _paper(rng: np.random.Generator, size: int, colour: tuple[int, int, int], grain: float) -> np.ndarray:
    """A flat ground with fine per-pixel grain, as real paper is never a single colour."""
    base = np.broadcast_to(np.array(colour, dtype=np.float64), (size, size, 3))
    return base + rng.normal(0.0, grain, (size, size, 1))


# ---- one painter per style ------------------------------------------------------------------------------


def _pointillist(rng: np.random.Generator, size: int, palette: np.ndarray) -> np.ndarray:
    """Separate dots of pure colour on a light ground; dot colours follow a hidden scene so shapes emerge."""
    img = _paper(rng, size, (246, 240, 226), 2.0)
    radius = max(1, round(size * rng.uniform(0.03, 0.045)))
    # Hidden scene: horizontal bands bent by noise, each band favouring one palette colour.
    y, x = _grid(size)
    scene = 0.7 * y + 0.3 * _smooth_noise(rng, size, 4) + 0.1 * np.sin(6 * x + rng.uniform(0, 6))
    dots = int(rng.uniform(0.55, 0.75) * size * size / (np.pi * (radius + 0.5) ** 2))
    ys, xs = rng.integers(0, size, dots), rng.integers(0, size, dots)
    band = np.clip((scene[ys, xs] / scene.max() * len(palette)).astype(int), 0, len(palette) - 1)
    # Seurat-style optical mixing: some dots take a random (often complementary) palette colour.
    stray = rng.random(dots) < 0.12
    band[stray] = rng.integers(0, len(palette), stray.sum())
    colours = palette[band] + rng.normal(0, 12, (dots, 3))
    dy, dx = np.nonzero(np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius + 0.3)
    py = np.clip(ys[:, None] + dy - radius, 0, size - 1)
    px = np.clip(xs[:, None] + dx - radius, 0, size - 1)
    img = img.copy()
    img[py, px] = colours[:, None, :]
    return img


def _geometric(rng: np.random.Generator, size: int, palette: np.ndarray) -> np.ndarray:
    """Mondrian-like grids or Bauhaus-like overlapping shapes, all flat colour with hard edges."""
    colours = [tuple(int(v) for v in c) for c in palette]
    image = Image.new("RGB", (size, size), colours[3])
    if rng.random() < 0.5:
        _mondrian(ImageDraw.Draw(image), rng, size, colours)
    else:
        _bauhaus(ImageDraw.Draw(image), rng, size, colours)
    return np.asarray(image, dtype=np.float64)


def _mondrian(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, colours: list) -> None:
    """Unequal cells between dark lines; some cells filled with the palette's strong colours."""
    # Paint the lines as the ground and inset each cell, so shared borders are one line wide, not two.
    draw.rectangle((0, 0, size, size), fill=colours[4])
    half = max(1, size // 64)
    cells = _split(rng, (0, 0, size, size), depth=3, min_side=size // 6)
    filled = rng.random(len(cells)) < 0.55
    # A grid with fewer than two coloured cells reads as a blank canvas, not as the style.
    filled[rng.choice(len(cells), size=min(2, len(cells)), replace=False)] = True
    for (x0, y0, x1, y1), fill in zip(cells, filled, strict=True):
        colour = colours[rng.integers(0, 3)] if fill else colours[3]
        draw.rectangle((x0 + half, y0 + half, x1 - half - 1, y1 - half - 1), fill=colour)


def _bauhaus(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, colours: list) -> None:
    """Large overlapping circles, triangles and bars on a plain ground, each in one flat colour."""
    if rng.random() < 0.4:
        draw.rectangle((0, 0, size, size), fill=colours[rng.integers(0, 3)])
    for extent in np.sort(rng.uniform(0.15, 0.45, rng.integers(5, 9)))[::-1] * size:
        # Black is an accent in this style, not a main colour; biggest shapes go down first.
        fill = colours[int(rng.choice([0, 1, 2, 3, 4], p=[0.27, 0.27, 0.27, 0.09, 0.1]))]
        cx, cy = rng.uniform(0.15, 0.85, 2) * size
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse((cx - extent, cy - extent, cx + extent, cy + extent), fill=fill)
        elif kind == 1:
            angles = rng.uniform(0, 2 * np.pi) + np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
            draw.polygon([(cx + extent * np.cos(a), cy + extent * np.sin(a)) for a in angles], fill=fill)
        else:
            w, h = (extent, extent * rng.uniform(0.2, 0.5))[:: 1 if rng.random() < 0.5 else -1]
            draw.rectangle((cx - w, cy - h, cx + w, cy + h), fill=fill)


def _split(rng: np.random.Generator, box: tuple[int, int, int, int], depth: int, min_side: int) -> list:
    """Recursively cut a box into unequal rectangles, the way a Mondrian grid is built."""
    x0, y0, x1, y1 = box
    wide, tall = x1 - x0 >= 2 * min_side, y1 - y0 >= 2 * min_side
    # Cells stop splitting at random once the grid has some structure, giving big and small cells.
    if depth == 0 or not (wide or tall) or (depth <= 1 and rng.random() < 0.3):
        return [box]
    if wide and (not tall or rng.random() < 0.5):
        cut = int(rng.integers(x0 + min_side, x1 - min_side + 1))
        halves = [(x0, y0, cut, y1), (cut, y0, x1, y1)]
    else:
        cut = int(rng.integers(y0 + min_side, y1 - min_side + 1))
        halves = [(x0, y0, x1, cut), (x0, cut, x1, y1)]
    return [leaf for half in halves for leaf in _split(rng, half, depth - 1, min_side)]


def _op_art(rng: np.random.Generator, size: int, palette: np.ndarray) -> np.ndarray:
    """Warped black/white stripes, rings or checks: high contrast that makes the eye see motion."""
    y, x = _grid(size)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    r = np.hypot(y - cy, x - cx)
    # A lens-like bulge around the centre bends every pattern, the classic Riley/Vasarely move.
    bulge = rng.uniform(0.1, 0.3) * np.exp(-(r**2) / rng.uniform(0.02, 0.08))
    freq = rng.uniform(3, 6)
    kind = rng.integers(3)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        wave = rng.uniform(0.02, 0.06) * np.sin(2 * np.pi * rng.uniform(1, 3) * y)
        phase = x * np.cos(angle) + y * np.sin(angle) + wave + bulge
        mask = np.sin(2 * np.pi * freq * phase) > 0
    elif kind == 1:
        theta = np.arctan2(y - cy, x - cx)
        mask = np.sin(2 * np.pi * freq * (r + bulge + 0.02 * np.sin(rng.integers(3, 7) * theta))) > 0
    else:
        half = freq / 2
        mask = (np.sin(2 * np.pi * half * (x + bulge)) > 0) ^ (np.sin(2 * np.pi * half * (y + bulge)) > 0)
    return np.where(mask[..., None], palette[0], palette[1])


def _watercolour(rng: np.random.Generator, size: int, palette: np.ndarray) -> np.ndarray:
    """Soft translucent blobs that darken where they overlap, with pigment pooling at their edges."""
    img = _paper(rng, size, (250, 248, 242), 1.5)
    for _ in range(rng.integers(4, 9)):
        alpha = _blob_mask(rng, size)
        # Pigment gathers where a wash dries, so edges (mid alpha) get extra colour.
        edge = 4 * alpha * (1 - alpha)
        alpha = (alpha * rng.uniform(0.25, 0.55) + 0.25 * edge) * (0.6 + 0.4 * _smooth_noise(rng, size, 6))
        colour = palette[rng.integers(len(palette))] / 255.0
        # Multiplying models layered transparent pigment: overlaps get darker, never lighter.
        img = img * (1 - alpha[..., None] * (1 - colour))
    return img


def _blob_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """One irregular blurred blob in [0, 1], the footprint of a single wash."""
    centre = rng.uniform(0.1, 0.9, 2) * size
    angles = np.sort(rng.uniform(0, 2 * np.pi, 14))
    radii = size * rng.uniform(0.12, 0.3) * rng.uniform(0.6, 1.3, 14)
    points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in points], fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(size * rng.uniform(0.015, 0.04)))
    return np.asarray(mask, dtype=np.float64) / 255.0


def _woodcut(rng: np.random.Generator, size: int, palette: np.ndarray) -> np.ndarray:
    """Layered hills, sky and sun carved as hatching, with bold contours between the shapes."""
    y, x = _grid(size)
    layers = rng.integers(3, 5)
    # Label each pixel with the frontmost hill it lies under (0 = sky).
    label = np.zeros((size, size), dtype=int)
    for k in range(1, layers + 1):
        horizon = 0.25 + 0.6 * (k - 1) / layers + 0.18 * (_profile(rng, size, 3) - 0.5)
        label[y > horizon[None, :]] = k
    sun = np.hypot(y - rng.uniform(0.1, 0.25), x - rng.uniform(0.2, 0.8)) < rng.uniform(0.07, 0.12)
    label[sun & (label == 0)] = layers + 1
    tone = np.linspace(0.3, 0.8, layers + 2)[np.minimum(label, layers + 1)]
    tone[label == layers + 1] = 0.05
    # Each region hatched at its own angle; line width grows with darkness, like a deeper cut.
    angles = rng.uniform(0, np.pi, layers + 2)[label]
    freq = rng.uniform(3, 4.5)
    wobble = 0.015 * _smooth_noise(rng, size, 8)
    hatch = ((x * np.cos(angles) + y * np.sin(angles) + wobble) * freq) % 1.0 < tone
    edges = (np.diff(label, axis=0, prepend=label[:1]) != 0) | (np.diff(label, axis=1, prepend=label[:, :1]) != 0)
    contour = Image.fromarray(edges.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))
    ink = hatch | (np.asarray(contour) > 0)
    paper = _paper(rng, size, (238, 226, 198), 3.0)
    return np.where(ink[..., None], palette[0] + rng.normal(0, 4, (size, size, 1)), paper)


_PAINTERS: dict[str, Callable[[np.random.Generator, int, np.ndarray], np.ndarray]] = {
    "pointillist": _pointillist,
    "geometric": _geometric,
    "op_art": _op_art,
    "watercolour": _watercolour,
    "woodcut": _woodcut,
}
