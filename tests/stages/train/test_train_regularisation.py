"""A regularisation image's weight (ingest.regularisation_weight) travels with it from ingest's item through the
latent cache's entry to the trainer, where its views' loss is scaled by it."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save

from artlora.config import AugmentConfig, IngestConfig, TrainConfig
from artlora.contracts import REGULARISATION_STYLE
from artlora.data import latent_cache
from artlora.data.latents import LatentSet
from artlora.demo import tiny
from artlora.stages.augment import run as augment
from artlora.stages.ingest import run as ingest
from artlora.stages.ingest.captions import Caption
from artlora.stages.ingest.curation import Candidate
from artlora.stages.ingest.sources import SourceFile
from artlora.stages.train import run as train

TOKENS, DIM = 77, 32  # the tiny text encoder's
WEIGHT = 0.25


def cache_entry(name: str, config: IngestConfig) -> dict:
    """The latent-cache entry of one accepted image, made by ingest's and augment's own functions."""
    candidate = Candidate(
        file=SourceFile(name, f"/raw/{name}"),
        sha256=name,
        outcome={"width": 64, "height": 64},
        caption=Caption(name, "sidecar .txt", 3, 3, False),
        bucket=(64, 64),
        blob=f"s3://b/blobs/{name}",
    )
    item = ingest._item(candidate, config)
    planned = augment.Planned(item, (64, 64), (255, 255, 255), name, f"s3://b/latents/{name}")
    texts = {item.caption: {"uri": f"s3://b/text/{name}", "sha256": "0"}}
    augment_config = AugmentConfig(storage_root="s3://tests", base_model="tiny")
    return augment.index_entry(planned, "0", texts, augment_config, None)


def test_a_regularisation_views_loss_weighs_the_regularisation_weight():
    config = IngestConfig(
        source="/raw", storage_root="s3://tests", regularisation_source="/reg", regularisation_weight=WEIGHT
    )
    names = ["watercolour/a.png", f"{REGULARISATION_STYLE}/b.png", "watercolour/c.png", f"{REGULARISATION_STYLE}/d.png"]
    entries = [cache_entry(name, config) for name in names]
    assert [e["style"] for e in entries] == ["watercolour", REGULARISATION_STYLE] * 2
    latents = torch.randn(4, 1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = {e["text"]["uri"]: {"hidden": torch.zeros(TOKENS, DIM)} for e in entries}
    (group,) = latent_cache._groups(entries, list(latents), text)
    assert group.loss_weights is not None and group.loss_weights.tolist() == [1.0, WEIGHT, 1.0, WEIGHT]

    def trainer(weighted: bool) -> train.Trainer:
        g = group if weighted else group.__class__(latents=group.latents, text=group.text, styles=group.styles)
        config = TrainConfig(storage_root="s3://tests", base_model="tiny", batch_size=1, seed=5)
        return train.Trainer(config, LatentSet((g,), torch.zeros(TOKENS, DIM), "fp"), tiny.build_tiny_sd())

    plain, weighted = trainer(False), trainer(True)
    seen = set()
    for index in range(8):
        (row,) = plain.batch(index)[1].tolist()
        seen.add(names[row].split("/")[0])
        with torch.no_grad():
            base, scaled = plain.loss(index, False)[0], weighted.loss(index, False)[0]
        expected = WEIGHT if names[row].startswith(REGULARISATION_STYLE) else 1.0
        assert scaled.item() == pytest.approx(expected * base.item(), rel=1e-5)
    assert seen == {"watercolour", REGULARISATION_STYLE}


def test_without_a_validation_split_the_held_out_loss_leaves_the_regularisation_images_out(store, bucket):
    def shard(name: str, **tensors: torch.Tensor) -> dict:
        data = save(tensors)
        uri = f"{bucket}/cache/{name}.safetensors"
        store.put_bytes(uri, data)
        return {"uri": uri, "sha256": hashlib.sha256(data).hexdigest()}

    text = shard("text", hidden=torch.zeros(TOKENS, DIM))
    entries = [
        {
            "id": style,
            "split": "train",
            "style": style,
            "caption": style,
            "bucket": [64, 64],
            "views": 1,
            "latents": shard(style, latents=torch.zeros(1, 4, 8, 8)),
            "text": text,
        }
        for style in ("watercolour", REGULARISATION_STYLE)
    ]
    index = f"{bucket}/cache/index.json"
    store.put_json(index, {"dataset_fingerprint": "fp", "entries": entries, "empty_text": text})
    held_out = latent_cache.validation_data(index)
    assert [style for group in held_out.groups for style in group.styles] == ["watercolour"]
    assert len(latent_cache.load_split(index, "train")) == 2, "training reads them"
