"""Ingest: every input accounted for, clear rejection reasons, a stratified deterministic split, fingerprints."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from artlora.config import IngestConfig
from artlora.data import dataset
from artlora.data.dataset import Item
from artlora.demo import sample_data
from artlora.io import storage
from artlora.stages.ingest import run as ingest
from artlora.stages.ingest.sources import SourceError
from artlora.stages.ingest.split import split

pytestmark = pytest.mark.usefixtures("mlflow_db")

STYLES = ("pointillist", "geometric", "woodcut")
COUNT = 15  # five per style
SIZE = 64
DUPLICATE_OF = "geometric/geometric_0001.png"

# Bad inputs and a word their rejection reason must contain.
BAD = {
    "empty.png": "empty",
    "truncated.jpg": "unreadable",
    "fake.jpg": "not an image",
    "geometric/zz_copy.png": "duplicate",
    "small.png": "too small",
    "notes.pdf": "not an image",
}


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_raw(root: Path, bad: bool = True) -> Path:
    sample_data.generate(root, count=COUNT, size=SIZE, styles=STYLES)
    if bad:
        (root / "empty.png").write_bytes(b"")
        whole = jpeg_bytes(sample_data.render("woodcut", 99, size=SIZE)[0])
        (root / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
        (root / "fake.jpg").write_text("this is a caption, not a picture\n")
        shutil.copyfile(root / DUPLICATE_OF, root / "geometric/zz_copy.png")
        (root / "small.png").write_bytes(png_bytes(sample_data.render("pointillist", 98, size=32)[0]))
        (root / "notes.pdf").write_bytes(b"%PDF-1.4\n% not really a pdf\n")
    return root


def inputs_of(root: Path) -> set[str]:
    """Every input file: all files except caption sidecars and hidden files."""
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix != ".txt" and not p.name.startswith(".")
    }


@pytest.fixture
def raw(tmp_path) -> Path:
    return make_raw(tmp_path / "raw")


def config_for(bucket: str, source: str | Path, **kwargs) -> IngestConfig:
    # One worker decodes in this process: the corpora here are tiny, and a process pool would only add its start-up.
    return IngestConfig(source=str(source), storage_root=bucket, **{"val_fraction": 0.2, "workers": 1, **kwargs})


def read_dataset(store: storage.Storage, result: ingest.IngestResult) -> tuple[list[dict], dict]:
    manifest = store.get_json(storage.join(result.dataset_uri, "manifest.json"))["items"]
    report = store.get_json(result.report_uri)
    return manifest, report


def test_every_input_is_accounted_for_once_with_a_reason(store, bucket, raw):
    result = ingest.run(config_for(bucket, raw))
    manifest, report = read_dataset(store, result)

    all_inputs = inputs_of(raw)
    listed = report["accepted_files"] + [r["file"] for r in report["rejections"]]
    assert len(listed) == len(set(listed)), "an input is listed twice"
    assert set(listed) == all_inputs
    assert report["inputs"] == len(all_inputs) == COUNT + len(BAD)
    assert (report["accepted"], report["rejected"]) == (COUNT, len(BAD))
    assert (result.accepted, result.rejected, result.reused) == (COUNT, len(BAD), False)
    assert not any(name.endswith(".txt") for name in listed), "caption sidecars are not inputs"

    reasons = {r["file"]: r["reason"] for r in report["rejections"]}
    assert set(reasons) == set(BAD)
    for name, word in BAD.items():
        assert word in reasons[name].lower(), (name, reasons[name])
    assert DUPLICATE_OF in reasons["geometric/zz_copy.png"]
    assert "32x32" in reasons["small.png"] and "ingest.min_size" in reasons["small.png"]
    assert ".pdf" in reasons["notes.pdf"]
    assert sorted(report["accepted_files"]) == sorted(item["source"] for item in manifest)


def test_manifest_has_sidecar_captions_folder_styles_and_stored_blobs(store, bucket, raw):
    result = ingest.run(config_for(bucket, raw))
    manifest, report = read_dataset(store, result)
    assert [item["source"] for item in manifest] == sorted(item["source"] for item in manifest)
    for item in manifest:
        path = raw / item["source"]
        assert item["caption"] == path.with_suffix(".txt").read_text().strip()
        assert item["caption"]  # every generated image has one
        assert item["style"] == item["source"].split("/")[0]
        assert (item["width"], item["height"]) == (SIZE, SIZE)
        assert item["bucket"] == [SIZE, SIZE]
        assert item["file"].startswith(storage.join(bucket, "datasets", "blobs") + "/")
        assert store.get_bytes(item["file"]) == path.read_bytes()
        assert item["sha256"] in item["file"]
    assert Counter(item["style"] for item in manifest) == {style: COUNT // len(STYLES) for style in STYLES}
    assert report["by_style"] == {style: {"train": 4, "val": 1} for style in STYLES}
    assert store.is_complete(result.dataset_uri)
    assert store.get_json(storage.join(result.dataset_uri, storage.COMPLETE_MARKER)) == {"items": COUNT}
    items = [Item(**{**item, "bucket": tuple(item["bucket"])}) for item in manifest]
    assert dataset.load_items(result.dataset_uri) == items
    assert dataset.load_background(result.dataset_uri) == (255, 255, 255)


def test_top_level_images_get_the_default_style_and_the_trigger_word_for_a_caption(store, bucket, tmp_path):
    raw = make_raw(tmp_path / "raw", bad=False)
    (raw / "loose.png").write_bytes(png_bytes(sample_data.render("op_art", 50, size=SIZE)[0]))
    manifest, _ = read_dataset(store, ingest.run(config_for(bucket, raw, trigger_word="zq style")))
    loose = next(item for item in manifest if item["source"] == "loose.png")
    assert (loose["style"], loose["caption"], loose["split"]) == ("default", "zq style", "train")


def test_a_top_level_image_without_caption_or_trigger_word_is_rejected(store, bucket, tmp_path):
    raw = make_raw(tmp_path / "raw", bad=False)
    (raw / "loose.png").write_bytes(png_bytes(sample_data.render("op_art", 50, size=SIZE)[0]))
    _, report = read_dataset(store, ingest.run(config_for(bucket, raw)))
    assert [(r["file"], r["code"]) for r in report["rejections"]] == [("loose.png", "caption_missing")]
    assert "ingest.trigger_word" in report["rejections"][0]["reason"]


def test_s3_source_gives_the_same_dataset_as_the_local_folder(store, bucket, raw):
    local = ingest.run(config_for(bucket, raw))
    prefix = storage.join(bucket, "raw", "styles")
    store.upload_dir(raw, prefix)
    from_s3 = ingest.run(config_for(bucket, prefix + "/"))
    assert from_s3.fingerprint == local.fingerprint
    assert from_s3.dataset_uri == local.dataset_uri
    assert (from_s3.accepted, from_s3.rejected, from_s3.reused) == (COUNT, len(BAD), True)


def test_s3_source_alone(store, bucket, raw):
    prefix = storage.join(bucket, "incoming")
    store.upload_dir(raw, prefix)
    result = ingest.run(config_for(bucket, prefix))
    manifest, report = read_dataset(store, result)
    assert set(report["accepted_files"]) | {r["file"] for r in report["rejections"]} == inputs_of(raw)
    assert {r["file"]: r["reason"] for r in report["rejections"]}.keys() == BAD.keys()
    for item in manifest:
        assert item["caption"] == (raw / item["source"]).with_suffix(".txt").read_text().strip()


# -- the split ----------------------------------------------------------------------------------------


def test_split_is_stratified_and_deterministic(store, bucket, raw):
    first = ingest.run(config_for(bucket, raw, val_fraction=0.4))
    manifest, _ = read_dataset(store, first)
    for style in STYLES:
        splits = Counter(item["split"] for item in manifest if item["style"] == style)
        assert splits == {"train": 3, "val": 2}, style

    items = [Item(**{**item, "split": "train"}) for item in manifest]
    again = split(list(reversed(items)), 0.4, seed=0)
    assert [(i.source, i.split) for i in again] == [(i["source"], i["split"]) for i in manifest]
    # Another seed draws another split (with the same per-style counts).
    other = split(items, 0.4, seed=1)
    assert [i.split for i in other] != [i["split"] for i in manifest]
    assert Counter((i.style, i.split) for i in other) == Counter((i["style"], i["split"]) for i in manifest)


@pytest.mark.parametrize(("val_fraction", "per_style_val"), [(0.0, 0), (0.2, 1), (0.6, 3)])
def test_val_fraction_is_respected_per_style(store, bucket, raw, val_fraction, per_style_val):
    manifest, report = read_dataset(store, ingest.run(config_for(bucket, raw, val_fraction=val_fraction)))
    per_style = COUNT // len(STYLES)
    assert report["by_style"] == {s: {"train": per_style - per_style_val, "val": per_style_val} for s in STYLES}


def test_split_keeps_a_lone_image_in_train():
    item = Item(
        sha256="a" * 64,
        source="solo/x.png",
        file="s3://b/x.png",
        caption="",
        style="solo",
        width=64,
        height=64,
        bucket=(64, 64),
    )
    assert [i.split for i in split([item], 0.9, seed=0)] == ["train"]


# -- fingerprints -------------------------------------------------------------------------------------


def test_same_inputs_same_fingerprint_and_reuse(store, bucket, raw, monkeypatch):
    first = ingest.run(config_for(bucket, raw))
    manifest_bytes = store.get_bytes(storage.join(first.dataset_uri, "manifest.json"))
    puts: list[str] = []
    original = storage.Storage.put_bytes

    def counting(self, uri, *args, **kwargs):
        puts.append(uri)
        return original(self, uri, *args, **kwargs)

    monkeypatch.setattr(storage.Storage, "put_bytes", counting)
    second = ingest.run(config_for(bucket, raw, experiment="another-experiment"))
    assert second.fingerprint == first.fingerprint
    assert second.dataset_uri == first.dataset_uri == storage.join(bucket, "datasets", first.fingerprint)
    assert (first.reused, second.reused) == (False, True)
    # The second run's own MLflow artifacts are written (by artlora's client, under mlflow/); the dataset is not.
    datasets = storage.join(bucket, "datasets")
    assert [uri for uri in puts if uri.startswith(datasets)] == [], "a reused dataset writes nothing"
    assert store.get_bytes(storage.join(first.dataset_uri, "manifest.json")) == manifest_bytes


def edit_pixels(raw: Path) -> None:
    path = raw / "woodcut/woodcut_0002.png"
    with Image.open(path) as image:
        image = image.convert("RGB")
    image.putpixel((0, 0), tuple(255 - c for c in image.getpixel((0, 0))))
    path.write_bytes(png_bytes(image))


def edit_caption(raw: Path) -> None:
    path = raw / "pointillist/pointillist_0000.txt"
    path.write_text(path.read_text().strip() + ", edited\n")


def add_image(raw: Path) -> None:
    (raw / "woodcut/woodcut_new.png").write_bytes(png_bytes(sample_data.render("woodcut", 77, size=SIZE)[0]))


def remove_image(raw: Path) -> None:
    (raw / "geometric/geometric_0004.png").unlink()
    (raw / "geometric/geometric_0004.txt").unlink()


@pytest.mark.parametrize("change", [edit_pixels, edit_caption, add_image, remove_image], ids=lambda f: f.__name__)
def test_a_change_gives_a_new_fingerprint(store, bucket, raw, change):
    before = ingest.run(config_for(bucket, raw))
    change(raw)
    after = ingest.run(config_for(bucket, raw))
    assert after.fingerprint != before.fingerprint
    assert after.reused is False
    assert store.is_complete(after.dataset_uri) and store.is_complete(before.dataset_uri)
    # The old version is untouched: it still lists what it had.
    old_manifest, _ = read_dataset(store, before)
    assert len(old_manifest) == COUNT


def test_each_change_is_distinct_and_blobs_are_shared(store, bucket, raw):
    fingerprints = [ingest.run(config_for(bucket, raw)).fingerprint]
    for change in (edit_pixels, edit_caption, add_image, remove_image):
        change(raw)
        fingerprints.append(ingest.run(config_for(bucket, raw)).fingerprint)
    assert len(set(fingerprints)) == len(fingerprints)
    # Every decodable image is stored once: the 15 originals, the small one, the edited one and the added one.
    blobs = list(store.list(storage.join(bucket, "datasets", "blobs")))
    assert len(blobs) == COUNT + 3


@pytest.mark.parametrize("override", [{"val_fraction": 0.4}, {"seed": 1}, {"min_size": 16}])
def test_curation_settings_are_part_of_the_fingerprint(store, bucket, raw, override):
    base = ingest.run(config_for(bucket, raw))
    assert ingest.run(config_for(bucket, raw, **override)).fingerprint != base.fingerprint


def test_lower_min_size_accepts_the_small_image_when_it_may_be_enlarged_to_a_bucket(store, bucket, raw):
    # small.png sits at the top level with no caption: the trigger word is its caption.
    config = config_for(bucket, raw, min_size=16, bucket_max_upscale=2, trigger_word="zq")
    manifest, report = read_dataset(store, ingest.run(config))
    assert "small.png" in report["accepted_files"]
    assert "small.png" not in {r["file"] for r in report["rejections"]}
    assert next(item["bucket"] for item in manifest if item["source"] == "small.png") == [64, 64]

    _, report = read_dataset(store, ingest.run(config_for(bucket, raw, min_size=16, trigger_word="zq")))
    reason = next(r for r in report["rejections"] if r["file"] == "small.png")
    assert reason["code"] == "no_bucket" and "ingest.bucket_max_upscale" in reason["reason"]


# -- nothing usable -----------------------------------------------------------------------------------


def test_all_bad_folder_raises(store, bucket, tmp_path):
    raw = tmp_path / "bad"
    raw.mkdir()
    (raw / "empty.png").write_bytes(b"")
    (raw / "fake.jpg").write_text("not an image")
    (raw / "small.png").write_bytes(png_bytes(sample_data.render("woodcut", 1, size=32)[0]))
    with pytest.raises(SourceError, match="rejected"):
        ingest.run(config_for(bucket, raw))
    # No dataset version; only the scan's caches (the decodable image's bytes and the index) are kept.
    caches = tuple(storage.join(bucket, "datasets", name) + "/" for name in ("blobs", "index"))
    assert [uri for uri in store.list(storage.join(bucket, "datasets")) if not uri.startswith(caches)] == []


def test_folder_without_images_raises(store, bucket, tmp_path):
    raw = tmp_path / "docs"
    raw.mkdir()
    (raw / "notes.pdf").write_bytes(b"%PDF")
    (raw / "readme.txt").write_text("hello")
    with pytest.raises(SourceError, match="no image files"):
        ingest.run(config_for(bucket, raw))


def test_missing_source_raises(store, bucket, tmp_path):
    with pytest.raises(SourceError, match="ingest.source"):
        ingest.run(config_for(bucket, tmp_path / "nope"))
    with pytest.raises(SourceError, match="ingest.source"):
        ingest.run(config_for(bucket, storage.join(bucket, "empty-prefix")))


def test_reused_dataset_report_accounts_for_the_current_inputs(store, bucket, raw):
    first = ingest.run(config_for(bucket, raw))
    (raw / "more-notes.pdf").write_bytes(b"%PDF")
    second = ingest.run(config_for(bucket, raw))
    assert second.rejected == len(BAD) + 1
    _, report = read_dataset(store, second)
    assert "more-notes.pdf" in {r["file"] for r in report["rejections"]}
    assert second.fingerprint != first.fingerprint or report["inputs"] == len(inputs_of(raw))


@pytest.mark.parametrize(("count", "val_fraction"), [(2, 0.75), (4, 0.9)])
def test_split_keeps_at_least_one_training_image_per_style(count, val_fraction):
    items = [
        Item(
            sha256=f"{i:064x}",
            source=f"s/{i}.png",
            file=f"s3://b/{i}.png",
            caption="",
            style="s",
            width=64,
            height=64,
            bucket=(64, 64),
        )
        for i in range(count)
    ]
    assert "train" in {item.split for item in split(items, val_fraction, seed=0)}


def test_files_in_hidden_folders_are_not_inputs(store, bucket, raw):
    hidden = raw / ".ipynb_checkpoints"
    hidden.mkdir()
    shutil.copyfile(raw / "woodcut/woodcut_0002.png", hidden / "woodcut_0002-checkpoint.png")
    manifest, report = read_dataset(store, ingest.run(config_for(bucket, raw)))
    assert {item["style"] for item in manifest} == set(STYLES)
    assert "woodcut/woodcut_0002.png" in report["accepted_files"]
