"""Augment: one checksummed latent shard per image, reused across runs, re-encoded exactly when inputs change."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import load

from artlora import latent_cache, models, sample_data, storage
from artlora.config import AugmentConfig, ConfigError, IngestConfig
from artlora.latent_cache import CorruptShardError
from artlora.stages import augment, ingest

pytestmark = pytest.mark.usefixtures("mlflow_db")

STYLES = ("watercolour", "op_art")
IMAGES = 6  # three per style: two train, one val
VIEWS = 2
RESOLUTION = 32
LATENT_SIDE = RESOLUTION // 4  # the tiny VAE downsamples by 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return models.save_tiny_sd(tmp_path_factory.mktemp("augment-model") / "tiny-sd")


@pytest.fixture
def raw(tmp_path) -> Path:
    root = tmp_path / "raw"
    sample_data.generate(root, count=IMAGES, size=64, styles=STYLES)
    return root


@pytest.fixture
def encoded(monkeypatch) -> list[int]:
    """The batch size of every real VAE encode call made during the test."""
    calls: list[int] = []
    original = AutoencoderKL.encode

    def counting(self, x, *args, **kwargs):
        calls.append(x.shape[0])
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    return calls


def ingest_raw(bucket: str, raw: Path) -> ingest.IngestResult:
    return ingest.run(IngestConfig(source=str(raw), storage_root=bucket, val_fraction=0.34))


def augment_config(bucket: str, model_dir: Path, dataset_uri: str | None, **kwargs) -> AugmentConfig:
    settings = {"resolution": RESOLUTION, "views_per_image": VIEWS, "batch_size": 4, **kwargs}
    return AugmentConfig(dataset_uri=dataset_uri, storage_root=bucket, base_model=str(model_dir), **settings)


def shard_latents(store: storage.Storage, index: dict) -> dict[str, torch.Tensor]:
    return {entry["id"]: load(store.get_bytes(entry["latents"]["uri"]))["latents"] for entry in index["entries"]}


def edit_one_image(raw: Path) -> str:
    path = raw / "op_art/op_art_0001.png"
    with Image.open(path) as image:
        image = image.convert("RGB")
    image.paste((255, 0, 0), (0, 0, 16, 16))
    out = io.BytesIO()
    image.save(out, format="PNG")
    path.write_bytes(out.getvalue())
    return path.relative_to(raw).as_posix()


def test_index_has_one_checksummed_shard_per_image(store, bucket, raw, model_dir, encoded):
    dataset = ingest_raw(bucket, raw)
    result = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri))
    assert (result.images, result.encoded_views, result.reused_views) == (IMAGES, IMAGES * VIEWS, 0)
    assert sum(encoded) == IMAGES * VIEWS
    assert result.cache_uri.startswith(storage.join(bucket, "cache", "index") + "/")

    items = ingest.load_manifest(dataset.dataset_uri)
    index = store.get_json(result.cache_uri)
    assert index["dataset_fingerprint"] == dataset.fingerprint
    assert index["augmentation"]["resolution"] == RESOLUTION
    assert [entry["id"] for entry in index["entries"]] == [item.sha256 for item in items]
    for item, entry in zip(items, index["entries"], strict=True):
        assert (entry["split"], entry["style"], entry["caption"]) == (item.split, item.style, item.caption)
        assert entry["latents"]["uri"].startswith(storage.join(bucket, "cache", "latents") + "/")
        assert store.head(entry["latents"]["uri"]) == {"sha256": entry["latents"]["sha256"]}
        latents = load(store.get_bytes(entry["latents"]["uri"]))["latents"]
        assert latents.shape == (VIEWS, 4, LATENT_SIDE, LATENT_SIDE)
        assert latents.dtype == torch.float32 and torch.isfinite(latents).all()
        assert not torch.equal(latents[0], latents[1]), "the views of one image should differ"
        text = load(store.get_bytes(entry["text"]["uri"]))["hidden"]
        assert text.shape == (77, 32)
    assert len({entry["latents"]["uri"] for entry in index["entries"]}) == IMAGES
    assert store.head(index["empty_text"]["uri"]) == {"sha256": index["empty_text"]["sha256"]}


def test_shards_load_through_load_split(store, bucket, raw, model_dir):
    dataset = ingest_raw(bucket, raw)
    cache_uri = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri)).cache_uri
    items = ingest.load_manifest(dataset.dataset_uri)
    counts = {split: sum(item.split == split for item in items) for split in ("train", "val")}
    assert counts == {"train": 4, "val": 2}
    for split, images in counts.items():
        loaded = latent_cache.load_split(cache_uri, split)
        assert len(loaded) == images * VIEWS
        (group,) = loaded.groups  # square views only: one bucket
        assert group.latents.shape == (images * VIEWS, 4, LATENT_SIDE, LATENT_SIDE)
        assert group.text.shape == (images * VIEWS, 77, 32)
        assert loaded.empty_text.shape == (77, 32)
        assert loaded.dataset_fingerprint == dataset.fingerprint
        # Each view carries its own image's caption states: views of one image share them.
        assert torch.equal(group.text[0], group.text[1])
        assert len(latent_cache.load_split(cache_uri, split, views=1)) == images
    # The split's latents are exactly the shards of its entries, in index order.
    index = store.get_json(cache_uri)
    shards = shard_latents(store, index)
    train = [shards[entry["id"]] for entry in index["entries"] if entry["split"] == "train"]
    assert torch.equal(latent_cache.load_split(cache_uri, "train").groups[0].latents, torch.cat(train))


def test_rerun_on_unchanged_data_encodes_nothing(store, bucket, raw, model_dir, encoded):
    dataset = ingest_raw(bucket, raw)
    config = augment_config(bucket, model_dir, dataset.dataset_uri)
    first = augment.run(config)
    index = store.get_bytes(first.cache_uri)
    encoded.clear()
    # batch_size and experiment do not shape a view: they must not invalidate the cache either.
    again = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri, batch_size=2, experiment="other"))
    assert encoded == []
    assert (again.encoded_views, again.reused_views, again.images) == (0, IMAGES * VIEWS, IMAGES)
    assert again.cache_uri == first.cache_uri
    assert store.get_bytes(again.cache_uri) == index


def test_editing_one_image_reencodes_only_its_views(store, bucket, raw, model_dir, encoded):
    before = augment.run(augment_config(bucket, model_dir, ingest_raw(bucket, raw).dataset_uri))
    old = shard_latents(store, store.get_json(before.cache_uri))
    edited = edit_one_image(raw)
    dataset = ingest_raw(bucket, raw)
    encoded.clear()
    after = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri))
    assert sum(encoded) == VIEWS
    assert (after.encoded_views, after.reused_views) == (VIEWS, (IMAGES - 1) * VIEWS)
    assert after.cache_uri != before.cache_uri
    new = shard_latents(store, store.get_json(after.cache_uri))
    edited_id = next(item.sha256 for item in ingest.load_manifest(dataset.dataset_uri) if item.source == edited)
    assert edited_id not in old
    assert set(new) - set(old) == {edited_id}
    for key in set(new) & set(old):
        assert torch.equal(new[key], old[key])


@pytest.mark.parametrize(
    "change",
    [{"rotation_degrees": 5.0}, {"hflip": False}, {"color_jitter": 0.1}, {"seed": 1}, {"views_per_image": 1}],
    ids=lambda change: next(iter(change)),
)
def test_changing_augmentation_settings_reencodes_everything(store, bucket, raw, model_dir, encoded, change):
    dataset = ingest_raw(bucket, raw)
    first = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri))
    encoded.clear()
    changed = augment_config(bucket, model_dir, dataset.dataset_uri, **change)
    second = augment.run(changed)
    views = changed.views_per_image
    assert sum(encoded) == IMAGES * views
    assert (second.encoded_views, second.reused_views) == (IMAGES * views, 0)
    assert second.cache_uri != first.cache_uri
    old = store.get_json(first.cache_uri)["entries"]
    new = store.get_json(second.cache_uri)["entries"]
    assert not {e["latents"]["uri"] for e in old} & {e["latents"]["uri"] for e in new}
    # Captions did not change, so their text states are shared.
    assert [e["text"] for e in old] == [e["text"] for e in new]


def test_views_are_deterministic_by_seed(store, bucket, raw, model_dir, tmp_path, monkeypatch):
    first = augment.run(augment_config(bucket, model_dir, ingest_raw(bucket, raw).dataset_uri))
    # A fresh work folder and storage prefix: nothing can be reused, everything is encoded again.
    monkeypatch.setenv("ARTLORA_WORK_DIR", str(tmp_path / "work-2"))
    other = bucket + "-b"
    second = augment.run(augment_config(other, model_dir, ingest_raw(other, raw).dataset_uri))
    assert second.encoded_views == IMAGES * VIEWS
    a = shard_latents(store, store.get_json(first.cache_uri))
    b = shard_latents(store, store.get_json(second.cache_uri))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_corrupt_shard_is_refused_and_a_rerun_repairs_it(store, bucket, raw, model_dir, encoded):
    dataset = ingest_raw(bucket, raw)
    config = augment_config(bucket, model_dir, dataset.dataset_uri)
    cache_uri = augment.run(config).cache_uri
    index = store.get_json(cache_uri)
    victim = next(entry for entry in index["entries"] if entry["split"] == "train")["latents"]["uri"]
    store.put_bytes(victim, b"not a safetensors shard")
    with pytest.raises(CorruptShardError, match="checksum mismatch") as info:
        latent_cache.load_split(cache_uri, "train")
    assert victim in str(info.value)
    latent_cache.load_split(cache_uri, "val")  # other shards are still fine

    # The message says "run augment again": that re-encodes the damaged image and nothing else.
    encoded.clear()
    repaired = augment.run(config)
    assert (repaired.encoded_views, sum(encoded)) == (VIEWS, VIEWS)
    assert len(latent_cache.load_split(repaired.cache_uri, "train")) == 4 * VIEWS


def test_a_corrupt_text_shard_is_refused(store, bucket, raw, model_dir):
    cache_uri = augment.run(augment_config(bucket, model_dir, ingest_raw(bucket, raw).dataset_uri)).cache_uri
    text_uri = store.get_json(cache_uri)["entries"][0]["text"]["uri"]
    good = store.get_bytes(text_uri)
    store.put_bytes(text_uri, good[:-4] + b"\0\0\0\0")  # same length, other bytes
    with pytest.raises(CorruptShardError, match=text_uri):
        for split in ("train", "val"):
            latent_cache.load_split(cache_uri, split)


def test_dataset_uri_is_required_and_must_be_complete(store, bucket, model_dir):
    with pytest.raises(ConfigError, match=r"--set augment\.dataset_uri="):
        augment.run(augment_config(bucket, model_dir, None))
    with pytest.raises(ValueError, match="not a complete dataset version"):
        augment.run(augment_config(bucket, model_dir, storage.join(bucket, "datasets", "nothing")))


def test_a_split_without_images_is_an_error(store, bucket, raw, model_dir):
    dataset = ingest.run(IngestConfig(source=str(raw), storage_root=bucket, val_fraction=0.0))
    cache_uri = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri, views_per_image=1)).cache_uri
    assert len(latent_cache.load_split(cache_uri, "train")) == IMAGES
    with pytest.raises(ValueError, match="no 'val' images"):
        latent_cache.load_split(cache_uri, "val")
