"""Base-model loading: the tiny in-code pipeline, local/S3/hub references, and module fingerprints."""

from __future__ import annotations

import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from artlora import models, storage

PARTS = ("unet", "vae", "text_encoder")


def generate(pipe, steps: int = 2) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(7)
    return pipe(
        "a cat, in the style of Münch!", num_inference_steps=steps, generator=generator, output_type="np"
    ).images


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return models.save_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="module")
def tiny_image() -> np.ndarray:
    return generate(models.build_tiny_sd())


@pytest.fixture
def fetched(monkeypatch) -> list[str]:
    """The URIs of every object downloaded from S3 during the test."""
    uris: list[str] = []
    original = storage.Storage.get_file

    def counting(self, uri, path):
        uris.append(uri)
        return original(self, uri, path)

    monkeypatch.setattr(storage.Storage, "get_file", counting)
    return uris


def test_same_seed_gives_identical_weights_and_other_seeds_differ():
    first, second, other = models.build_tiny_sd(0), models.build_tiny_sd(0), models.build_tiny_sd(1)
    for part in PARTS:
        a, b, c = (getattr(pipe, part).state_dict() for pipe in (first, second, other))
        assert a.keys() == b.keys() == c.keys()
        assert all(torch.equal(a[name], b[name]) for name in a), part
        assert not all(torch.equal(a[name], c[name]) for name in a), part


def test_tiny_model_shapes_and_scheduler():
    pipe = models.build_tiny_sd(prediction_type="v_prediction")
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    latents = pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert latents.shape == (1, 4, 16, 16)
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
    config = pipe.scheduler.config
    assert (config.prediction_type, config.num_train_timesteps, config.beta_schedule) == (
        "v_prediction",
        1000,
        "scaled_linear",
    )
    assert (config.clip_sample, config.set_alpha_to_one, config.steps_offset) == (False, False, 1)
    assert pipe.safety_checker is None
    assert not any(getattr(pipe, part).training for part in PARTS)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain words",
        "Münch, Hokusai & Klimt!? (1893) — «ok»",
        "日本の浮世絵🎨",
        "tabs\tand\nnewlines",
        "x" * 300,
    ],
)
def test_tokenizer_encodes_any_text_to_77_ids(text):
    tokenizer = models.build_tiny_sd().tokenizer
    ids = tokenizer(text, padding="max_length", truncation=True, max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (1, 77)
    assert ids[0, 0] == tokenizer.bos_token_id
    content = ids[0, 1:].tolist()
    content = content[: content.index(tokenizer.eos_token_id)]
    assert all(0 <= i < tokenizer.bos_token_id for i in content)  # only byte tokens, nothing unknown
    compact = unicodedata.normalize("NFC", "".join(text.lower().split()))
    assert len(content) == min(len(compact.encode()), 75)  # one token per UTF-8 byte, truncated to fit


def test_generation_is_deterministic(tiny_image):
    again = generate(models.build_tiny_sd())
    assert tiny_image.shape == (1, 64, 64, 3)
    assert np.array_equal(tiny_image, again)
    assert not np.array_equal(tiny_image, generate(models.build_tiny_sd(seed=1)))


def test_saved_folder_loads_to_the_same_pipeline(tiny_folder, tiny_image):
    assert (tiny_folder / "model_index.json").is_file()
    assert list(tiny_folder.glob("unet/*.safetensors"))
    loaded = models.load_pipeline(str(tiny_folder))
    assert np.array_equal(generate(loaded), tiny_image)
    built = models.build_tiny_sd()
    fingerprint = models.module_fingerprint
    for part in PARTS:
        assert fingerprint(getattr(loaded, part)) == fingerprint(getattr(built, part)), part


def test_s3_model_is_downloaded_once_and_reused(store, bucket, tiny_folder, tiny_image, fetched, work_dir):
    uri = f"{bucket}/models/tiny"
    uploaded = store.upload_dir(tiny_folder, uri)
    assert np.array_equal(generate(models.load_pipeline(uri)), tiny_image)
    assert sorted(fetched) == sorted(uploaded)
    (cached,) = (work_dir / "models").iterdir()
    assert (cached / models.DOWNLOAD_MARKER).is_file()
    mtime = cached.stat().st_mtime_ns
    fetched.clear()
    assert np.array_equal(generate(models.load_pipeline(uri + "/")), tiny_image)
    assert fetched == []
    assert [p.name for p in (work_dir / "models").iterdir()] == [cached.name]
    assert cached.stat().st_mtime_ns == mtime


def test_changed_model_at_same_prefix_is_downloaded_again(store, bucket, tmp_path, tiny_folder, fetched):
    uri = f"{bucket}/models/tiny"
    store.upload_dir(tiny_folder, uri)
    first = models.local_model_path(uri)
    store.upload_dir(models.save_tiny_sd(tmp_path / "seed1", seed=1), uri)
    fetched.clear()
    second = models.local_model_path(uri)
    assert second != first
    assert fetched
    fingerprint = models.module_fingerprint
    assert fingerprint(models.load_pipeline(uri).unet) == fingerprint(models.build_tiny_sd(seed=1).unet)


def test_unfinished_download_is_not_reused(store, bucket, tiny_folder, fetched):
    uri = f"{bucket}/models/tiny"
    store.upload_dir(tiny_folder, uri)
    cached = Path(models.local_model_path(uri))
    # What a download killed half-way would leave behind: no marker, missing weights.
    (cached / models.DOWNLOAD_MARKER).unlink()
    shutil.rmtree(cached / "unet")
    fetched.clear()
    assert models.local_model_path(uri) == str(cached)
    assert fetched
    assert (cached / models.DOWNLOAD_MARKER).is_file()
    assert list(cached.glob("unet/*.safetensors"))


def test_empty_s3_prefix_raises(store, bucket):
    with pytest.raises(models.ModelLoadError, match="no objects under"):
        models.local_model_path(f"{bucket}/models/missing")


def test_missing_local_path_raises_with_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(models.ModelLoadError, match="not found") as info:
        models.load_pipeline(str(missing))
    assert str(missing) in str(info.value)
    with pytest.raises(models.ModelLoadError, match=r"\.safetensors"):
        models.local_model_path(str(tmp_path / "model.safetensors"))


def test_local_references(tmp_path, tiny_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert models.local_model_path(str(tiny_folder)) == str(tiny_folder)
    assert models.local_model_path("some-org/some-model") == "some-org/some-model"
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    assert models.local_model_path(str(checkpoint)) == str(checkpoint)
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(models.ModelLoadError, match="model_index.json"):
        models.local_model_path("not-a-model")


def test_loader_failure_names_the_reference(tmp_path, tiny_folder):
    broken = shutil.copytree(tiny_folder, tmp_path / "broken")
    for weights in broken.glob("unet/*.safetensors"):
        weights.write_bytes(b"not safetensors")
    with pytest.raises(models.ModelLoadError, match="could not load base model") as info:
        models.load_pipeline(str(broken))
    assert str(broken) in str(info.value)


def test_fingerprint_is_stable_and_tracks_every_weight():
    vae = models.build_tiny_sd().vae
    digest = models.module_fingerprint(vae)
    assert len(digest) == 64
    assert models.module_fingerprint(models.build_tiny_sd().vae) == digest
    with torch.no_grad():
        vae.decoder.conv_out.bias[0] += 1e-3
    assert models.module_fingerprint(vae) != digest
    assert models.module_fingerprint(models.build_tiny_sd().vae.to(torch.float16)) != digest


def test_fingerprint_is_identical_in_another_process():
    script = "from artlora.models import *\nprint(module_fingerprint(build_tiny_sd().text_encoder))"
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == models.module_fingerprint(models.build_tiny_sd().text_encoder)
