"""Augment: views at their bucket's size, checked shards reused across runs, re-encoded exactly when inputs change."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import load

from artlora.config import AugmentConfig, ConfigError, IngestConfig
from artlora.data import latent_cache, shards
from artlora.data.dataset import DatasetError
from artlora.data.dataset import load_items as dataset_items
from artlora.data.latent_cache import CacheError
from artlora.data.shards import CorruptShardError
from artlora.demo import sample_data, tiny
from artlora.diffusion import loading
from artlora.io import storage
from artlora.stages.augment import cache_keys, caption_variants
from artlora.stages.augment import run as augment
from artlora.stages.ingest import run as ingest

pytestmark = pytest.mark.usefixtures("mlflow_db")

STYLES = ("watercolour", "op_art")
IMAGES = 6  # three per style: two train, one val
VIEWS = 2
SIDE = 64  # the sample images' side, and so their ingest bucket's
LATENT_SIDE = SIDE // 4  # the tiny VAE downsamples by 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny.save_tiny(tmp_path_factory.mktemp("augment-model") / "tiny-sd")


@pytest.fixture
def raw(tmp_path) -> Path:
    root = tmp_path / "raw"
    sample_data.generate(root, count=IMAGES, size=SIDE, styles=STYLES)
    return root


class Encodes(list):
    """The input shape of every real VAE encode call made during a test, counting the views it was given: the
    blank views that fill a batch up to the batch size are left out."""

    @property
    def views(self) -> int:
        return sum(shape[0] for shape in self)


@pytest.fixture
def encoded(monkeypatch) -> Encodes:
    calls = Encodes()
    original = AutoencoderKL.encode

    def counting(self, x, *args, **kwargs):
        calls.append((int(x.flatten(1).any(1).sum()), *x.shape[1:]))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    return calls


def ingest_raw(bucket: str, raw: Path) -> ingest.IngestResult:
    return ingest.run(IngestConfig(source=str(raw), storage_root=bucket, val_fraction=0.34, bucket_resolution=SIDE))


def augment_config(bucket: str, model_dir: Path, dataset_uri: str | None, **kwargs) -> AugmentConfig:
    settings = {"views_per_image": VIEWS, "batch_size": 4, **kwargs}
    return AugmentConfig(dataset_uri=dataset_uri, storage_root=bucket, base_model=str(model_dir), **settings)


def view_config(**kwargs) -> AugmentConfig:
    return AugmentConfig(storage_root="s3://test-views", base_model="unused", **kwargs)


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


# -- shards ---------------------------------------------------------------------------------------------


def test_a_shard_proves_it_is_whole_and_which_key_it_holds():
    data = shards.pack("key-a", {"latents": torch.randn(2, 4, 8, 8)})
    assert torch.equal(shards.check(data, "key-a", ("latents",))["latents"], load(data)["latents"])
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    damaged = {
        "truncated": data[: len(data) - 100],
        "header only": data[:40],
        "empty": b"",
        "flipped byte": bytes(flipped),
        "garbage": b"not a safetensors shard" * 10,
    }
    assert [name for name, bad in damaged.items() if _passes(bad, "key-a")] == []
    with pytest.raises(CorruptShardError, match="holds key 'key-a'"):
        shards.check(data, "key-b", ("latents",))
    with pytest.raises(CorruptShardError, match="lacks tensors"):
        shards.check(data, "key-a", ("hidden",))


def _passes(data: bytes, key: str) -> bool:
    try:
        shards.check(data, key, ("latents",))
    except CorruptShardError:
        return False
    return True


# -- the stage ------------------------------------------------------------------------------------------


def test_index_has_one_checksummed_shard_per_image(store, bucket, raw, model_dir, encoded):
    dataset = ingest_raw(bucket, raw)
    result = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri))
    assert (result.images, result.encoded_views, result.reused_views) == (IMAGES, IMAGES * VIEWS, 0)
    assert encoded.views == IMAGES * VIEWS
    assert all(shape[0] <= 4 and shape[2:] == (SIDE, SIDE) for shape in encoded)
    assert result.cache_uri.startswith(storage.join(bucket, "cache", "index") + "/")

    items = dataset_items(dataset.dataset_uri)
    index = store.get_json(result.cache_uri)
    assert (index["format"], index["dataset_fingerprint"]) == (2, dataset.fingerprint)
    assert index["augmentation"]["hflip"] is True and index["augmentation"]["views_per_image"] == VIEWS
    assert index["buckets"] == {f"{SIDE}x{SIDE}": IMAGES}
    assert [entry["id"] for entry in index["entries"]] == [item.sha256 for item in items]
    for item, entry in zip(items, index["entries"], strict=True):
        assert (entry["split"], entry["style"], entry["caption"]) == (item.split, item.style, item.caption)
        assert (entry["bucket"], entry["views"]) == ([SIDE, SIDE], VIEWS)
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
    assert result.encoded_captions == len({item.caption for item in items} | {""})


def test_shards_load_through_load_split(store, bucket, raw, model_dir):
    dataset = ingest_raw(bucket, raw)
    cache_uri = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri)).cache_uri
    items = dataset_items(dataset.dataset_uri)
    counts = {split: sum(item.split == split for item in items) for split in ("train", "val")}
    assert counts == {"train": 4, "val": 2}
    for split, images in counts.items():
        loaded = latent_cache.load_split(cache_uri, split)
        assert len(loaded) == images * VIEWS
        (group,) = loaded.groups  # square views only: one bucket
        assert group.bucket == (SIDE, SIDE)
        assert group.latents.shape == (images * VIEWS, 4, LATENT_SIDE, LATENT_SIDE)
        assert group.text.shape == (images * VIEWS, 77, 32)
        assert loaded.empty_text.shape == (77, 32)
        assert loaded.dataset_fingerprint == dataset.fingerprint
        # Each view carries its own image's caption states: views of one image share them.
        assert torch.equal(group.text[0], group.text[1])
        assert len(latent_cache.load_split(cache_uri, split, views=1)) == images
    # The split's latents are exactly the shards of its entries, in index order.
    index = store.get_json(cache_uri)
    shards_by_id = shard_latents(store, index)
    train = [shards_by_id[entry["id"]] for entry in index["entries"] if entry["split"] == "train"]
    assert torch.equal(latent_cache.load_split(cache_uri, "train").groups[0].latents, torch.cat(train))


def test_views_are_encoded_per_bucket_and_loaded_as_one_group_per_size(
    store, bucket, raw, model_dir, encoded, monkeypatch
):
    dataset = ingest_raw(bucket, raw)
    items = dataset_items(dataset.dataset_uri)
    # As ingest would bucket three landscape images and three square ones.
    bucketed = [replace(item, bucket=(128, 64) if i % 2 == 0 else (64, 64)) for i, item in enumerate(items)]
    monkeypatch.setattr(augment.dataset, "load_items", lambda uri: bucketed)
    result = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri))
    assert encoded.views == IMAGES * VIEWS
    assert sorted({shape[2:] for shape in encoded}) == [(64, 64), (64, 128)]  # every batch within one bucket
    index = store.get_json(result.cache_uri)
    assert index["buckets"] == {"128x64": 3, "64x64": 3}
    assert [tuple(entry["bucket"]) for entry in index["entries"]] == [item.bucket for item in bucketed]
    train = latent_cache.load_split(result.cache_uri, "train")
    assert [(g.bucket, tuple(g.latents.shape[1:])) for g in train.groups] == [
        ((64, 64), (4, 16, 16)),
        ((128, 64), (4, 16, 32)),
    ]
    # Another bucket for one image is another view of it: only that image is encoded again.
    encoded.clear()
    bucketed[1] = replace(bucketed[1], bucket=(64, 128))
    assert augment.run(augment_config(bucket, model_dir, dataset.dataset_uri)).encoded_views == VIEWS
    assert encoded == [(VIEWS, 3, 128, 64)]


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
    assert (again.encoded_captions, again.rebuilt_shards) == (0, 0)
    assert again.cache_uri == first.cache_uri
    assert store.get_bytes(again.cache_uri) == index


def test_editing_one_image_reencodes_only_its_views(store, bucket, raw, model_dir, encoded):
    before = augment.run(augment_config(bucket, model_dir, ingest_raw(bucket, raw).dataset_uri))
    old = shard_latents(store, store.get_json(before.cache_uri))
    edited = edit_one_image(raw)
    dataset = ingest_raw(bucket, raw)
    encoded.clear()
    after = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri))
    assert encoded.views == VIEWS
    assert (after.encoded_views, after.reused_views, after.encoded_captions) == (VIEWS, (IMAGES - 1) * VIEWS, 0)
    assert after.cache_uri != before.cache_uri
    new = shard_latents(store, store.get_json(after.cache_uri))
    edited_id = next(item.sha256 for item in dataset_items(dataset.dataset_uri) if item.source == edited)
    assert edited_id not in old
    assert set(new) - set(old) == {edited_id}
    for key in set(new) & set(old):
        assert torch.equal(new[key], old[key])


def test_editing_a_caption_encodes_only_its_text(store, bucket, raw, model_dir, encoded):
    before = augment.run(augment_config(bucket, model_dir, ingest_raw(bucket, raw).dataset_uri))
    (raw / "op_art/op_art_0001.txt").write_text("a brand new caption nobody else has")
    encoded.clear()
    after = augment.run(augment_config(bucket, model_dir, ingest_raw(bucket, raw).dataset_uri))
    assert encoded == []
    assert (after.encoded_views, after.reused_views, after.encoded_captions) == (0, IMAGES * VIEWS, 1)
    assert after.cache_uri != before.cache_uri
    old, new = (store.get_json(result.cache_uri)["entries"] for result in (before, after))
    assert [e["latents"] for e in old] == [e["latents"] for e in new]
    changed = [(a["text"], b["text"]) for a, b in zip(old, new, strict=True) if a["text"] != b["text"]]
    assert len(changed) == 1
    edited = next(e for e in new if e["caption"] == "a brand new caption nobody else has")
    assert changed[0][1] == edited["text"]


CHANGES = [
    {"rotation_degrees": 5.0},
    {"hflip": False},
    {"crop_scale": (0.5, 1.0)},
    {"brightness": 0.1},
    {"contrast": 0.1},
    {"saturation": 0.1},
    {"hue": 0.05},
    {"seed": 1},
    {"views_per_image": 3},
]


def test_changing_any_augmentation_setting_reencodes_everything(store, bucket, raw, model_dir, encoded):
    dataset = ingest_raw(bucket, raw)
    first = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri))
    old = store.get_json(first.cache_uri)["entries"]
    seen = {first.cache_uri}
    for change in CHANGES:
        encoded.clear()
        changed = augment_config(bucket, model_dir, dataset.dataset_uri, **change)
        second = augment.run(changed)
        views_now = changed.views_per_image
        assert encoded.views == IMAGES * views_now, change
        assert (second.encoded_views, second.reused_views, second.encoded_captions) == (IMAGES * views_now, 0, 0)
        assert second.cache_uri not in seen, change
        seen.add(second.cache_uri)
        new = store.get_json(second.cache_uri)["entries"]
        assert not {e["latents"]["uri"] for e in old} & {e["latents"]["uri"] for e in new}, change
        # Captions did not change, so their text states are shared.
        assert [e["text"] for e in old] == [e["text"] for e in new]


def test_another_vae_reencodes_every_view_and_keeps_the_text(store, bucket, raw, model_dir, encoded, tmp_path):
    pipe = loading.load_pipeline(str(model_dir))
    pipe.register_modules(vae=tiny.build_tiny_sd(seed=1).vae)
    other_vae = tmp_path / "other-vae"
    pipe.save_pretrained(other_vae, safe_serialization=True)
    dataset = ingest_raw(bucket, raw)
    first = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri))
    encoded.clear()
    second = augment.run(augment_config(bucket, other_vae, dataset.dataset_uri))
    assert encoded.views == IMAGES * VIEWS
    assert (second.encoded_views, second.reused_views, second.encoded_captions) == (IMAGES * VIEWS, 0, 0)
    old, new = (store.get_json(result.cache_uri) for result in (first, second))
    assert not {e["latents"]["uri"] for e in old["entries"]} & {e["latents"]["uri"] for e in new["entries"]}
    assert [e["text"] for e in old["entries"]] == [e["text"] for e in new["entries"]]
    assert old["identities"]["vae"] != new["identities"]["vae"]
    assert old["identities"]["text"] == new["identities"]["text"]


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


def damage(store: storage.Storage, uri: str, data: bytes) -> None:
    """Replace a stored shard's body but keep its object metadata, as a partial or bit-rotted copy would."""
    store.put_bytes(uri, data, metadata=store.head(uri))


def test_corrupt_and_partial_shards_are_refused_then_rebuilt(store, bucket, raw, model_dir, encoded):
    config = augment_config(bucket, model_dir, ingest_raw(bucket, raw).dataset_uri)
    cache_uri = augment.run(config).cache_uri
    index = store.get_json(cache_uri)
    good = shard_latents(store, index)
    uris = [entry["latents"]["uri"] for entry in index["entries"]]
    bodies = [store.get_bytes(uri) for uri in uris]
    damage(store, uris[0], bodies[0][: len(bodies[0]) // 2])  # a partial upload
    damage(store, uris[1], bodies[1][:-4] + b"\0\0\0\0")  # same length, other bytes
    damage(store, uris[2], b"not a safetensors shard")
    damage(store, uris[3], bodies[4])  # a whole shard, but another image's
    text_uri = index["empty_text"]["uri"]
    damage(store, text_uri, store.get_bytes(text_uri)[:-4] + b"\0\0\0\0")
    damaged_train = {e["latents"]["uri"] for e in index["entries"] if e["split"] == "train"} & set(uris[:4])
    with pytest.raises(CorruptShardError, match="checksum mismatch") as info:
        latent_cache.load_split(cache_uri, "train")
    # Shards are read in parallel and the first failure stops the read: it names one of the damaged ones.
    assert any(uri in str(info.value) for uri in damaged_train)

    # The message says "run augment again": that rebuilds exactly the damaged shards, and nothing else.
    encoded.clear()
    repaired = augment.run(config)
    assert (repaired.rebuilt_shards, repaired.encoded_views, repaired.encoded_captions) == (5, 4 * VIEWS, 1)
    assert encoded.views == 4 * VIEWS
    # The same views again; in other batches, so equal up to float rounding (and so in a new index).
    rebuilt = shard_latents(store, store.get_json(repaired.cache_uri))
    assert rebuilt.keys() == good.keys()
    assert all(torch.allclose(rebuilt[key], good[key], atol=1e-5) for key in good)
    for split in ("train", "val"):
        latent_cache.load_split(repaired.cache_uri, split)


def test_dataset_uri_is_required_and_must_be_complete(store, bucket, model_dir):
    with pytest.raises(ConfigError, match=r"--set augment\.dataset_uri="):
        augment.run(augment_config(bucket, model_dir, None))
    with pytest.raises(DatasetError, match="not a complete dataset version"):
        augment.run(augment_config(bucket, model_dir, storage.join(bucket, "datasets", "nothing")))


def test_a_split_without_images_is_an_error(store, bucket, raw, model_dir):
    dataset = ingest.run(IngestConfig(source=str(raw), storage_root=bucket, val_fraction=0.0))
    cache_uri = augment.run(augment_config(bucket, model_dir, dataset.dataset_uri, views_per_image=1)).cache_uri
    assert len(latent_cache.load_split(cache_uri, "train")) == IMAGES
    with pytest.raises(CacheError, match="no .val. images"):
        latent_cache.load_split(cache_uri, "val")


def test_keys_follow_every_input_of_a_view():
    settings = cache_keys.view_settings(view_config())
    base = ("f" * 64, "vae-1", settings, 0, (32, 32))
    key = cache_keys.view_key(*base)
    for position, other in enumerate(("e" * 64, "vae-2", {**settings, "hue": 0.3}, 1, (64, 32))):
        assert cache_keys.view_key(*base[:position], other, *base[position + 1 :]) != key
    # What does not shape a view is not part of its key.
    assert cache_keys.view_settings(view_config(batch_size=3, experiment="x")) == settings


def test_a_views_latent_does_not_depend_on_the_views_batched_with_it(model_dir):
    """Batches are filled up to the batch size, so a rerun that encodes only some views gets the very latents a run
    that encoded them all did (alone, a view comes out of this VAE different in the last bits)."""
    vae = loading.load_pipeline(str(model_dir)).vae
    views = list(torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    together = augment.encode(vae, views[:4], batch_size=4)
    apart = augment.encode(vae, views[3:4], batch_size=4) + augment.encode(vae, views[4:], batch_size=4)
    assert torch.equal(together[3], apart[0])
    with torch.no_grad():
        alone = vae.encode(views[3][None]).latent_dist.mean[0] * vae.config.scaling_factor
    assert not torch.equal(alone, together[3]), "this VAE no longer differs alone: the test shows nothing"


# -- caption variants -----------------------------------------------------------------------------------


def test_caption_variants_are_encoded_once_each_and_listed_with_their_image(store, bucket, raw, model_dir, monkeypatch):
    for image in raw.rglob("*.png"):  # a second caption for every image, the same for all
        image.with_suffix(".caption").write_text("a second caption, with, tags\n", encoding="utf-8")
    config = IngestConfig(
        source=str(raw), storage_root=bucket, val_fraction=0.34, bucket_resolution=SIDE, captions="all"
    )
    dataset = ingest.run(config)
    items = dataset_items(dataset.dataset_uri)
    assert all(item.more_captions == ("a second caption, with, tags",) for item in items)
    encoded: list[str] = []
    original = augment.encode_text

    def counting(pipe, captions, config):
        encoded.extend(captions)
        return original(pipe, captions, config)

    monkeypatch.setattr(augment, "encode_text", counting)
    settings = augment_config(
        bucket, model_dir, dataset.dataset_uri, shuffle_tags=True, keep_tokens=1, caption_variants=3
    )
    result = augment.run(settings)

    made = {item.sha256: caption_variants.variants(item, settings) for item in items if item.split == "train"}
    distinct = {item.caption for item in items} | {""} | {text for texts in made.values() for text in texts}
    assert sorted(encoded) == sorted(distinct), "every distinct string encoded exactly once"
    assert result.encoded_captions == len(distinct) < len(items) + 1 + sum(len(texts) for texts in made.values())
    index = store.get_json(result.cache_uri)
    assert index["augmentation"]["caption_variants"] == 3
    for entry in index["entries"]:
        listed = [variant["caption"] for variant in entry.get("variants", [])]
        assert listed == made.get(entry["id"], []), "training images list their variants, held-out ones none"
    train = latent_cache.load_split(result.cache_uri, "train")
    (group,) = train.groups
    assert group.variants is not None
    assert sorted(group.variants.captions) == sorted({text for texts in made.values() for text in texts})
    assert [int(n) for n in group.variants.counts] == [
        len(made[e["id"]]) for e in index["entries"] if e["id"] in made for _ in range(VIEWS)
    ]
    encoded.clear()
    assert augment.run(settings).encoded_captions == 0 and encoded == [], "a rerun encodes no caption"
