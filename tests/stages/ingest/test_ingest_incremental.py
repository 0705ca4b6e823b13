"""Re-ingest: only new or changed files are decoded (the scan index remembers the rest), a setting change
decodes nothing, and a pool of worker processes curates exactly what a single process does."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from PIL import Image

from artlora.config import IngestConfig
from artlora.data import dataset
from artlora.demo import sample_data
from artlora.io import storage
from artlora.stages.ingest import run as ingest
from artlora.stages.ingest import scan_index

pytestmark = pytest.mark.usefixtures("mlflow_db")

COUNT = 12
STYLES = ("geometric", "woodcut", "op_art")


@pytest.fixture
def raw(tmp_path) -> Path:
    root = tmp_path / "raw"
    sample_data.generate(root, count=COUNT, size=64, styles=STYLES)
    Image.new("RGB", (300, 300), (200, 30, 30)).save(root / "woodcut" / "large.png")  # 90,000 pixels
    return root


def config_for(bucket: str, source: Path | str, **kwargs) -> IngestConfig:
    settings = {"val_fraction": 0.25, "workers": 1, "max_pixels": 50_000, "trigger_word": "zq", **kwargs}
    return IngestConfig(source=str(source), storage_root=bucket, **settings)


def test_a_rerun_decodes_nothing_and_a_grown_dataset_only_its_new_and_changed_files(store, bucket, raw, caplog, capsys):
    first = ingest.run(config_for(bucket, raw))
    assert (first.decoded, first.from_index, first.accepted) == (COUNT + 1, 0, COUNT)
    assert "img/s" in capsys.readouterr().err, "the progress bar shows images per second"

    again = ingest.run(config_for(bucket, raw))
    assert (again.decoded, again.from_index, again.reused) == (0, COUNT + 1, True)
    assert again.fingerprint == first.fingerprint

    sample_data.render("woodcut", 90, size=64)[0].save(raw / "woodcut" / "new_1.png")
    sample_data.render("geometric", 91, size=64)[0].save(raw / "geometric" / "new_2.png")
    sample_data.render("op_art", 92, size=64)[0].save(raw / "op_art" / "op_art_0002.png")  # edited in place
    caplog.set_level(logging.INFO, logger="artlora.stages.ingest")
    grown = ingest.run(config_for(bucket, raw))
    assert (grown.decoded, grown.from_index, grown.accepted) == (3, COUNT, COUNT + 2)
    assert grown.fingerprint != first.fingerprint and not grown.reused
    assert f"decoded 3 new or changed image files, {COUNT} known from the index" in caplog.text


@pytest.mark.parametrize(
    "change",
    [
        {"min_size": 48},
        {"max_aspect_ratio": 2.0},
        {"blur_threshold": 1.0},
        {"near_duplicate_distance": 2},
        {"near_duplicates": "keep_together"},
        {"bucket_resolution": 128},
        {"empty_caption": "reject"},
        {"max_pixels": 40_000},  # lower: the large image stays undecoded
    ],
    ids=lambda change: next(iter(change)),
)
def test_curation_settings_change_without_decoding_again(store, bucket, raw, change):
    first = ingest.run(config_for(bucket, raw))
    changed = ingest.run(config_for(bucket, raw, **change))
    assert (changed.decoded, changed.from_index) == (0, COUNT + 1)
    assert changed.fingerprint != first.fingerprint


def test_a_higher_pixel_limit_decodes_the_image_it_now_admits(store, bucket, raw):
    first = ingest.run(config_for(bucket, raw))
    report = store.get_json(first.report_uri)
    assert {r["file"]: r["code"] for r in report["rejections"]} == {"woodcut/large.png": "too_many_pixels"}
    large = hashlib.sha256((raw / "woodcut" / "large.png").read_bytes()).hexdigest()
    blobs = storage.join(bucket, "datasets", "blobs")
    assert not any(large in uri for uri in store.list(blobs)), "an image over the limit is never decoded nor stored"

    raised = ingest.run(config_for(bucket, raw, max_pixels=100_000))
    assert (raised.decoded, raised.accepted, raised.rejected) == (1, COUNT + 1, 0)
    assert any(large in uri for uri in store.list(blobs))


def test_another_background_is_another_index(store, bucket, raw):
    ingest.run(config_for(bucket, raw))
    other = ingest.run(config_for(bucket, raw, background=(0, 0, 0)))
    assert other.decoded == COUNT + 1
    assert scan_index.index_uri(bucket, (255, 255, 255)) != scan_index.index_uri(bucket, (0, 0, 0))
    assert dataset.load_background(other.dataset_uri) == (0, 0, 0)


def test_worker_processes_curate_exactly_what_one_process_does(store, bucket, raw):
    prefix = storage.join(bucket, "incoming")
    store.upload_dir(raw, prefix)
    results = {
        "local, 1 worker": ingest.run(config_for(f"{bucket}/one", raw, workers=1)),
        "local, 2 workers": ingest.run(config_for(f"{bucket}/two", raw, workers=2)),
        "s3, 2 workers": ingest.run(config_for(f"{bucket}/three", prefix, workers=2)),
    }
    views = {}
    for name, result in results.items():
        assert result.decoded == COUNT + 1, name
        items = dataset.load_items(result.dataset_uri)
        report = store.get_json(result.report_uri)
        views[name] = (
            [(i.source, i.sha256, i.caption, i.split, i.bucket) for i in items],
            report["rejections"],
            report["by_style"],
        )
    assert views["local, 1 worker"] == views["local, 2 workers"] == views["s3, 2 workers"]
