"""Near duplicates, balance, split and buckets: no near-duplicate pair straddles train and val, caps and splits
are stratified by style and deterministic, every accepted image has a bucket."""

from __future__ import annotations

import io
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from artlora.config import IngestConfig
from artlora.data.dataset import Item, load_items
from artlora.io import storage
from artlora.stages.ingest import buckets, near_duplicates, split
from artlora.stages.ingest import run as ingest

pytestmark = pytest.mark.usefixtures("mlflow_db")

STYLES = ("ink", "oil")
CLUSTERS = 4  # per style: an original and two smaller copies of it
COPIES = {"a.png": 128, "b.jpg": 96, "c.jpg": 80}


def texture(seed: int, size: int = 128) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
    return Image.fromarray(blocks.repeat(16, 0).repeat(16, 1))


@pytest.fixture
def raw(tmp_path) -> Path:
    root = tmp_path / "raw"
    for s, style in enumerate(STYLES):
        for c in range(CLUSTERS):
            original = texture(100 * s + c)
            for name, side in COPIES.items():
                path = root / style / f"c{c}_{name}"
                path.parent.mkdir(parents=True, exist_ok=True)
                out = io.BytesIO()
                fmt = "PNG" if path.suffix == ".png" else "JPEG"
                original.resize((side, side), Image.Resampling.LANCZOS).save(out, format=fmt)
                path.write_bytes(out.getvalue())
                path.with_suffix(".txt").write_text(f"{style} picture {c}")
    return root


def config_for(bucket: str, source: Path, **kwargs) -> IngestConfig:
    return IngestConfig(source=str(source), storage_root=bucket, **{"workers": 1, **kwargs})


def cluster_of(source: str) -> str:
    return source.split("_")[0]  # "ink/c2"


def test_near_duplicates_are_rejected_keeping_the_largest(store, bucket, raw):
    result = ingest.run(config_for(bucket, raw))
    report = store.get_json(result.report_uri)
    assert sorted(report["accepted_files"]) == sorted(f"{s}/c{c}_a.png" for s in STYLES for c in range(CLUSTERS))
    for rejection in report["rejections"]:
        assert rejection["code"] == "near_duplicate"
        assert f"near duplicate of {cluster_of(rejection['file'])}_a.png" in rejection["reason"]
    assert len(report["near_duplicate_clusters"]) == len(STYLES) * CLUSTERS


def test_kept_together_near_duplicates_never_straddle_train_and_val(store, bucket, raw):
    for seed in range(3):
        result = ingest.run(config_for(bucket, raw, near_duplicates="keep_together", val_fraction=0.5, seed=seed))
        items = load_items(result.dataset_uri)
        assert len(items) == len(STYLES) * CLUSTERS * len(COPIES) and result.rejected == 0
        splits: dict[str, set[str]] = {}
        for item in items:
            splits.setdefault(cluster_of(item.source), set()).add(item.split)
        assert all(len(s) == 1 for s in splits.values()), splits
        per_style = Counter((item.style, item.split) for item in items)
        for style in STYLES:  # whole clusters of 3: 6 of the 12 images go to val
            assert per_style[(style, "val")] == 6, per_style


def test_a_distance_of_zero_only_groups_identical_hashes(store, bucket, raw):
    result = ingest.run(config_for(bucket, raw, near_duplicate_distance=0))
    # The resized copies differ from their original by a few bits at most; some may still hash identically.
    assert result.accepted >= len(STYLES) * CLUSTERS
    report = store.get_json(result.report_uri)
    assert all(r["code"] == "near_duplicate" and "distance 0" in r["reason"] for r in report["rejections"])


def test_cap_per_style_is_reported_and_deterministic(store, bucket, raw):
    config = config_for(bucket, raw, near_duplicates="keep_together", max_per_style=5)
    first = ingest.run(config)
    items = load_items(first.dataset_uri)
    assert Counter(item.style for item in items) == {style: 5 for style in STYLES}
    report = store.get_json(first.report_uri)
    capped = [r for r in report["rejections"] if r["code"] == "style_cap"]
    assert len(capped) == len(STYLES) * (CLUSTERS * len(COPIES) - 5)
    assert all("ingest.max_per_style" in r["reason"] for r in capped)
    assert ingest.run(config).fingerprint == first.fingerprint
    other = ingest.run(config_for(bucket, raw, near_duplicates="keep_together", max_per_style=5, seed=9))
    assert {i.source for i in load_items(other.dataset_uri)} != {i.source for i in items}


# -- split and cap, as functions ------------------------------------------------------------------------


def fake_items(count: int, styles: int = 3) -> list[Item]:
    return [
        Item(
            sha256=f"{i:064x}",
            source=f"s{i % styles}/{i:03d}.png",
            file=f"s3://b/{i}",
            caption="",
            style=f"s{i % styles}",
            width=64,
            height=64,
            bucket=(64, 64),
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_split_assigns_whole_groups(seed):
    items = fake_items(60)
    rng = random.Random(seed)
    groups = {item.sha256: f"{item.style}-g{rng.randrange(5)}" for item in items if rng.random() < 0.7}
    out = split.split(items, 0.3, seed, groups)
    by_group: dict[str, set[str]] = {}
    for item in out:
        if item.sha256 in groups:
            by_group.setdefault(groups[item.sha256], set()).add(item.split)
    assert all(len(s) == 1 for s in by_group.values())
    for style in ("s0", "s1", "s2"):
        counts = Counter(item.split for item in out if item.style == style)
        assert counts["train"] >= 1 and counts["val"] <= math.floor(20 * 0.3 + 0.5)
    assert split.split(list(reversed(items)), 0.3, seed, groups) == out


def test_cap_per_style_keeps_the_same_items_whatever_the_order():
    items = fake_items(30)
    kept, dropped = split.cap_per_style(items, 4, seed=1)
    assert Counter(i.style for i in kept) == {"s0": 4, "s1": 4, "s2": 4} and len(dropped) == 18
    assert sorted(split.cap_per_style(items[::-1], 4, seed=1)[0], key=lambda i: i.sha256) == sorted(
        kept, key=lambda i: i.sha256
    )
    assert split.cap_per_style(items, None, seed=1) == (items, [])


def test_near_duplicate_clusters_follow_chains():
    hashes = ["0000000000000000", "0000000000000007", "000000000000003f", "ffffffffffffffff", "fffffffffffffffe"]
    assert near_duplicates.clusters(hashes, 3) == [[0, 1, 2], [3, 4]]
    assert near_duplicates.clusters(hashes, 0) == []
    assert near_duplicates.hamming(hashes[0], hashes[2]) == 6


# -- buckets ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "resolution", "upscale", "bucket"),
    [
        ((512, 512), 512, 1.0, (512, 512)),
        ((1024, 683), 512, 1.0, (640, 384)),
        ((683, 1024), 512, 1.0, (384, 640)),
        ((3000, 1000), 1024, 1.0, (1792, 576)),
        ((300, 300), 512, 1.0, (256, 256)),  # no upscaling: a smaller bucket
        ((300, 300), 512, 2.0, (512, 512)),
        ((64, 64), 64, 1.0, (64, 64)),
        ((128, 128), 64, 1.0, (64, 64)),
        ((1000, 400), 64, 1.0, (64, 64)),  # at 64 px there is one bucket
        ((63, 100), 512, 1.0, None),
    ],
)
def test_bucket_assignment(size, resolution, upscale, bucket):
    assert buckets.assign(*size, resolution, upscale) == bucket


@pytest.mark.parametrize("resolution", [64, 512, 768, 1024])
def test_buckets_have_sides_in_steps_of_64_no_more_area_than_asked_and_no_upscaling(resolution):
    rng = random.Random(resolution)
    for _ in range(300):
        width, height = rng.randint(64, 3000), rng.randint(64, 3000)
        if max(width, height) / min(width, height) > 3:
            continue
        w, h = buckets.assign(width, height, resolution)
        assert w % 64 == h % 64 == 0 and w * h <= resolution**2
        assert w <= width and h <= height
        if min(width, height) >= resolution >= 512:  # room for a full-size bucket: close in area and shape
            assert w * h >= 0.75 * resolution**2
            assert abs(math.log((w / h) / (width / height))) < 0.25


def test_every_accepted_image_has_a_bucket_and_the_report_counts_them(store, bucket, tmp_path):
    root = tmp_path / "raw"
    (root / "s").mkdir(parents=True)
    for i, size in enumerate([(256, 256), (384, 256), (256, 384), (256, 256)]):
        texture(i, 512).resize(size).save(root / "s" / f"{i}.png")
        (root / "s" / f"{i}.txt").write_text("x")
    result = ingest.run(config_for(bucket, root, bucket_resolution=256))
    report = store.get_json(result.report_uri)
    assert report["by_bucket"] == {"192x320": 1, "256x256": 2, "320x192": 1}
    assert {item.source: item.bucket for item in load_items(result.dataset_uri)}["s/1.png"] == (320, 192)
    assert storage.join(bucket, "datasets") in result.dataset_uri
