"""CLIP score and KID come from a CLIP model given locally, and are never downloaded."""

from __future__ import annotations

import math

import numpy as np
import pytest
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from artlora.demo.tiny import byte_tokenizer
from artlora.diffusion.loading import ModelLoadError
from artlora.stages.evaluate import clip_metrics


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A tiny CLIP with random weights, saved as a user would save a real one (safetensors)."""
    tokenizer = byte_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_clip_score_and_kid_from_a_local_model(clip_folder):
    rng = np.random.default_rng(0)
    painted = {s: rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8) for s in ("a", "b")}
    real = {s: (rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), []) for s in ("a", "b")}
    prompts = {"a": ["a red thing"] * 4, "b": ["a blue thing"] * 4}
    metrics = clip_metrics.measure(str(clip_folder), prompts, painted, real)
    assert set(metrics) == {"clip_score", "kid"} and all(math.isfinite(v) for v in metrics.values())
    assert clip_metrics.measure(None, prompts, painted, real) == {}  # skipped without a model


def test_a_hub_id_is_refused_before_any_work():
    with pytest.raises(ModelLoadError, match="never downloads"):
        clip_metrics.check_reference("openai/clip-vit-base-patch32")
    clip_metrics.check_reference(None)
