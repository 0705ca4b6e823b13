"""The procedural artworks dataset: layout, determinism, image format, and that the styles really differ."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from artlora.demo import sample_data
from artlora.demo.sample_data import STYLES, generate, render


@pytest.fixture
def out(tmp_path) -> Path:
    """A dataset folder of its own: tmp_path may also hold the shared work folder."""
    return tmp_path / "data"


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_counts_and_captions(out):
    paths = generate(out, count=23, size=32, seed=3)

    assert len(paths) == 23
    assert sorted(p.name for p in out.iterdir()) == sorted(STYLES)
    for index, path in enumerate(paths):
        style = STYLES[index % len(STYLES)]
        assert path == out / style / f"{style}_{index:04d}.png"
        caption = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
        assert caption and "\n" not in caption
    # Round-robin: no style gets more than one image over any other.
    per_style = Counter(p.parent.name for p in paths)
    assert max(per_style.values()) - min(per_style.values()) <= 1
    assert len(list(out.rglob("*.png"))) == len(list(out.rglob("*.txt"))) == 23


def test_captions_vary_and_name_the_palette(out):
    paths = generate(out, count=40, size=32)
    captions = [p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in paths]

    assert len(set(captions)) >= 30
    for path, caption in zip(paths, captions, strict=True):
        assert any(name in caption for name in sample_data.PALETTES[path.parent.name])


def test_subset_of_styles(out):
    paths = generate(out, count=6, size=32, styles=["woodcut", "op_art"])

    assert [p.parent.name for p in paths] == ["woodcut", "op_art"] * 3
    assert sorted(p.name for p in out.iterdir()) == ["op_art", "woodcut"]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, count=10, size=48, seed=7)
    generate(b, count=10, size=48, seed=7)
    generate(c, count=10, size=48, seed=8)

    files_a, files_c = _tree_bytes(a), _tree_bytes(c)
    assert files_a == _tree_bytes(b)
    assert files_a.keys() == files_c.keys()
    pngs = [name for name in files_a if name.endswith(".png")]
    assert all(files_a[name] != files_c[name] for name in pngs)


def test_single_image_regenerates_independently(out):
    paths = generate(out, count=8, size=40, seed=5)
    image, caption = render(STYLES[7 % len(STYLES)], 7, size=40, seed=5)

    assert np.array_equal(np.asarray(image), np.asarray(Image.open(paths[7])))
    assert caption == paths[7].with_suffix(".txt").read_text(encoding="utf-8").strip()


@pytest.mark.parametrize("size", [32, 77, 128])
def test_images_are_rgb_of_requested_size(out, size):
    for path in generate(out, count=len(STYLES), size=size):
        with Image.open(path) as image:
            assert image.mode == "RGB"
            assert image.size == (size, size)


def _features(path: Path) -> np.ndarray:
    """Saturation, near-white/near-black fractions, edge density and flatness: simple, but they tell styles apart."""
    rgb = np.asarray(Image.open(path), dtype=np.float64)
    hi, lo = rgb.max(axis=2), rgb.min(axis=2)
    saturation = (hi - lo) / np.maximum(hi, 1.0)
    grey = rgb.mean(axis=2)
    gy, gx = np.gradient(grey)
    gradient = np.hypot(gx, gy)
    return np.array(
        [
            saturation.mean(),
            (lo > 225).mean(),
            (hi < 80).mean(),
            (gradient > 30).mean(),
            # Flat-colour styles have large areas with no change at all; painted and printed ones have grain.
            (gradient < 0.5).mean(),
        ]
    )


def _dataset(root: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    paths = generate(root, count=50, size=64, seed=seed)
    return np.stack([_features(p) for p in paths]), np.array([STYLES.index(p.parent.name) for p in paths])


def test_styles_are_measurably_different(tmp_path):
    # Fit a nearest-centroid classifier on one generated set and score it on a set from another seed.
    train_x, train_y = _dataset(tmp_path / "train", seed=0)
    test_x, test_y = _dataset(tmp_path / "test", seed=10_000)
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-9
    centroids = np.stack([((train_x - mean) / std)[train_y == k].mean(axis=0) for k in range(len(STYLES))])

    distances = np.linalg.norm(((test_x - mean) / std)[:, None, :] - centroids[None], axis=2)
    accuracy = (distances.argmin(axis=1) == test_y).mean()

    assert accuracy >= 0.9, f"nearest-centroid accuracy {accuracy:.2f}"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"count": 0}, "count"),
        ({"count": -3}, "count"),
        ({"count": 2.5}, "count"),
        ({"size": 31}, "size"),
        ({"size": 64.0}, "size"),
        ({"styles": ["pointillist", "cubist"]}, "styles"),
        ({"styles": []}, "styles"),
        ({"styles": "op_art"}, "styles"),
        ({"styles": ["op_art", "op_art"]}, "styles"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise(out, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        generate(out, **kwargs)
    assert not out.exists(), "nothing is written when the arguments are bad"


def test_render_rejects_unknown_style():
    with pytest.raises(ValueError, match="style"):
        render("cubist", 0)
