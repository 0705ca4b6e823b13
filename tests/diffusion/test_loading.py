"""Base-model loading: the tiny in-code pipeline, local/S3/hub references, and module fingerprints."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from artlora.demo import tiny
from artlora.diffusion import families, loading, model_sources
from artlora.diffusion.families import sgm_names
from artlora.io import storage

PARTS = ("unet", "vae", "text_encoder")


def generate(pipe, steps: int = 2) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(7)
    return pipe(
        "a cat, in the style of Münch!", num_inference_steps=steps, generator=generator, output_type="np"
    ).images


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return tiny.save_tiny(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="module")
def tiny_image() -> np.ndarray:
    return generate(tiny.build_tiny_sd())


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
    first, second, other = tiny.build_tiny_sd(0), tiny.build_tiny_sd(0), tiny.build_tiny_sd(1)
    for part in PARTS:
        a, b, c = (getattr(pipe, part).state_dict() for pipe in (first, second, other))
        assert a.keys() == b.keys() == c.keys()
        assert all(torch.equal(a[name], b[name]) for name in a), part
        assert not all(torch.equal(a[name], c[name]) for name in a), part


def test_tiny_model_shapes_and_scheduler():
    pipe = tiny.build_tiny_sd(prediction_type="v_prediction")
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
    tokenizer = tiny.build_tiny_sd().tokenizer
    ids = tokenizer(text, padding="max_length", truncation=True, max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (1, 77)
    assert ids[0, 0] == tokenizer.bos_token_id
    content = ids[0, 1:].tolist()
    content = content[: content.index(tokenizer.eos_token_id)]
    assert all(0 <= i < tokenizer.bos_token_id for i in content)  # only byte tokens, nothing unknown
    compact = unicodedata.normalize("NFC", "".join(text.lower().split()))
    assert len(content) == min(len(compact.encode()), 75)  # one token per UTF-8 byte, truncated to fit


def test_generation_is_deterministic(tiny_image):
    again = generate(tiny.build_tiny_sd())
    assert tiny_image.shape == (1, 64, 64, 3)
    assert np.array_equal(tiny_image, again)
    assert not np.array_equal(tiny_image, generate(tiny.build_tiny_sd(seed=1)))


def test_saved_folder_loads_to_the_same_pipeline(tiny_folder, tiny_image):
    assert (tiny_folder / "model_index.json").is_file()
    assert list(tiny_folder.glob("unet/*.safetensors"))
    loaded = loading.load_pipeline(str(tiny_folder))
    assert np.array_equal(generate(loaded), tiny_image)
    built = tiny.build_tiny_sd()
    fingerprint = loading.module_fingerprint
    for part in PARTS:
        assert fingerprint(getattr(loaded, part)) == fingerprint(getattr(built, part)), part


def test_s3_model_is_downloaded_once_and_reused(store, bucket, tiny_folder, tiny_image, fetched, work_dir):
    uri = f"{bucket}/models/tiny"
    uploaded = store.upload_dir(tiny_folder, uri)
    assert np.array_equal(generate(loading.load_pipeline(uri)), tiny_image)
    assert sorted(fetched) == sorted(uploaded)
    (cached,) = (work_dir / "models").iterdir()
    assert (cached / model_sources.DOWNLOAD_MARKER).is_file()
    mtime = cached.stat().st_mtime_ns
    fetched.clear()
    assert np.array_equal(generate(loading.load_pipeline(uri + "/")), tiny_image)
    assert fetched == []
    assert [p.name for p in (work_dir / "models").iterdir()] == [cached.name]
    assert cached.stat().st_mtime_ns == mtime


def test_changed_model_at_same_prefix_is_downloaded_again(store, bucket, tmp_path, tiny_folder, fetched):
    uri = f"{bucket}/models/tiny"
    store.upload_dir(tiny_folder, uri)
    first = loading.local_model_path(uri)
    store.upload_dir(tiny.save_tiny(tmp_path / "seed1", seed=1), uri)
    fetched.clear()
    second = loading.local_model_path(uri)
    assert second != first
    assert fetched
    fingerprint = loading.module_fingerprint
    assert fingerprint(loading.load_pipeline(uri).unet) == fingerprint(tiny.build_tiny_sd(seed=1).unet)


def test_unfinished_download_is_not_reused(store, bucket, tiny_folder, fetched):
    uri = f"{bucket}/models/tiny"
    store.upload_dir(tiny_folder, uri)
    cached = Path(loading.local_model_path(uri))
    # What a download killed half-way would leave behind: no marker, missing weights.
    (cached / model_sources.DOWNLOAD_MARKER).unlink()
    shutil.rmtree(cached / "unet")
    fetched.clear()
    assert loading.local_model_path(uri) == str(cached)
    assert fetched
    assert (cached / model_sources.DOWNLOAD_MARKER).is_file()
    assert list(cached.glob("unet/*.safetensors"))


def test_empty_s3_prefix_raises(store, bucket):
    with pytest.raises(loading.ModelLoadError, match="no objects under"):
        loading.local_model_path(f"{bucket}/models/missing")


def test_missing_local_path_raises_with_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(loading.ModelLoadError, match="not found") as info:
        loading.load_pipeline(str(missing))
    assert str(missing) in str(info.value)
    with pytest.raises(loading.ModelLoadError, match=r"\.safetensors"):
        loading.local_model_path(str(tmp_path / "model.safetensors"))


def test_local_references(tmp_path, tiny_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert loading.local_model_path(str(tiny_folder)) == str(tiny_folder)
    assert loading.local_model_path("some-org/some-model") == "some-org/some-model"
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    assert loading.local_model_path(str(checkpoint)) == str(checkpoint)
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(loading.ModelLoadError, match="model_index.json"):
        loading.local_model_path("not-a-model")


def test_pickle_based_weights_are_refused_with_how_to_convert(tmp_path, tiny_folder, store, bucket):
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, ckpt)
    with pytest.raises(loading.ModelLoadError, match="convert_original_stable_diffusion_to_diffusers") as info:
        loading.load_pipeline(str(ckpt))
    assert str(ckpt) in str(info.value) and "pickle" in str(info.value)

    # A diffusers folder whose UNet has .bin weights only: named, with how to re-save it, locally and from S3.
    folder = shutil.copytree(tiny_folder, tmp_path / "bin-weights")
    unet = loading.load_pipeline(str(tiny_folder)).unet
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.unlink()
    unet.save_pretrained(folder / "unet", safe_serialization=False)
    for ref in (str(folder), storage.join(bucket, "models", "bin-weights")):
        if storage.is_s3(ref):
            store.upload_dir(folder, ref)
        with pytest.raises(loading.ModelLoadError, match="safe_serialization=True") as info:
            loading.load_pipeline(ref)
        assert f"{ref}/unet/diffusion_pytorch_model.bin" in str(info.value)


def test_loader_failure_names_the_reference(tmp_path, tiny_folder):
    broken = shutil.copytree(tiny_folder, tmp_path / "broken")
    for weights in broken.glob("unet/*.safetensors"):
        weights.write_bytes(b"not safetensors")
    with pytest.raises(loading.ModelLoadError, match="could not load base model") as info:
        loading.load_pipeline(str(broken))
    assert str(broken) in str(info.value)


def test_fingerprint_is_stable_and_tracks_every_weight():
    vae = tiny.build_tiny_sd().vae
    digest = loading.module_fingerprint(vae)
    assert len(digest) == 64
    assert loading.module_fingerprint(tiny.build_tiny_sd().vae) == digest
    with torch.no_grad():
        vae.decoder.conv_out.bias[0] += 1e-3
    assert loading.module_fingerprint(vae) != digest
    assert loading.module_fingerprint(tiny.build_tiny_sd().vae.to(torch.float16)) != digest


def test_fingerprint_is_identical_in_another_process():
    script = "from artlora.demo import tiny\nfrom artlora.diffusion import loading\n"
    script += "print(loading.module_fingerprint(tiny.build_tiny_sd().text_encoder))"
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == loading.module_fingerprint(tiny.build_tiny_sd().text_encoder)


# -- single-file checkpoints ------------------------------------------------------------------------------
# diffusers reads the original (ldm/SGM) single-file layout but cannot write it, so the tests write it here: the
# UNet by kohya.py's SGM paths, the VAE and CLIP by the ldm names that diffusers' single-file reader undoes.

_VAE_TO_LDM = (
    (r"\.conv_norm_out\.", ".norm_out."),
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"\.mid_block\.resnets\.(\d+)\.", lambda match: f".mid.block_{int(match[1]) + 1}."),
    (r"\.mid_block\.attentions\.0\.", ".mid.attn_1."),
    (r"\.group_norm\.", ".norm."),
    (r"\.to_([qkv])\.", r".\1."),
    (r"\.to_out\.0\.", ".proj_out."),
    (r"\.conv_shortcut\.", ".nin_shortcut."),
)
_OPEN_CLIP_NAMES = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_OPEN_CLIP_PARTS = (
    ("text_model.encoder.layers.", "transformer.resblocks."),
    ("self_attn.", "attn."),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
)


def ldm_vae(vae) -> dict[str, torch.Tensor]:
    levels = len(vae.config.up_block_types)
    state = {}
    for key, value in vae.state_dict().items():
        # the decoder's levels count from the top in diffusers, from the bottom in ldm
        key = re.sub(r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.", key)
        key = re.sub(r"^(decoder\.up\.\d+)\.resnets\.", r"\1.block.", key)
        key = re.sub(r"^(decoder\.up\.\d+)\.upsamplers\.0\.", r"\1.upsample.", key)
        for pattern, replacement in _VAE_TO_LDM:
            key = re.sub(pattern, replacement, key)
        if ".mid.attn_1." in key and key.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # ldm's attention projections are 1x1 convolutions
        state["first_stage_model." + key] = value
    return state


def ldm_open_clip(encoder) -> dict[str, torch.Tensor]:
    """SDXL's second encoder as OpenCLIP names it: q, k and v fused into in_proj, the projection transposed."""
    state, fused = {}, {}
    for key, value in encoder.state_dict().items():
        if key == "text_projection.weight":
            state["text_projection"] = value.T.contiguous()
        elif key in _OPEN_CLIP_NAMES:
            state[_OPEN_CLIP_NAMES[key]] = value
        else:
            match = re.match(r"(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", key)
            if match:
                fused.setdefault((match[1], match[3]), {})[match[2]] = value
                continue
            for diffusers_part, original in _OPEN_CLIP_PARTS:
                key = key.replace(diffusers_part, original)
            state[key] = value
    for (layer, kind), parts in fused.items():
        name = layer.replace("text_model.encoder.layers.", "transformer.resblocks.")
        state[f"{name}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return {"conditioner.embedders.1.model." + key: value for key, value in state.items()}


def ldm_checkpoint(pipe) -> dict[str, torch.Tensor]:
    """A pipeline in the original single-file layout that AUTOMATIC1111 and ComfyUI save."""
    unet = pipe.unet
    state = {
        "model.diffusion_model." + sgm_names.sgm_path(key, unet.config): value
        for key, value in unet.state_dict().items()
    }
    state.update(ldm_vae(pipe.vae))
    clip_prefix = (
        "conditioner.embedders.0.transformer." if families.of(pipe).name == "sdxl" else "cond_stage_model.transformer."
    )
    for key, value in pipe.text_encoder.state_dict().items():
        state[clip_prefix + ("" if key.startswith("text_model.") else "text_model.") + key] = value
    if families.of(pipe).name == "sdxl":
        state.update(ldm_open_clip(pipe.text_encoder_2))
    return {key: value.contiguous() for key, value in state.items()}


def sdxl_with_wider_second_encoder():
    """The tiny SDXL with a 48-wide second encoder. diffusers tells SDXL's two encoders apart in a single file by
    their widths (768 and 1280 in SDXL); the tiny SDXL's are both 32 wide, so it would load the first encoder's
    weights into the second."""
    pipe = tiny.build_tiny_sdxl()
    config = pipe.text_encoder_2.config.to_dict()
    config.update(hidden_size=48)
    torch.manual_seed(1)
    pipe.text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config)).eval()
    torch.manual_seed(0)
    pipe.unet = UNet2DConditionModel.from_config({**pipe.unet.config, "cross_attention_dim": 80}).eval()
    pipe.register_modules(text_encoder_2=pipe.text_encoder_2, unet=pipe.unet)
    return pipe


def write_single_file(pipe, folder: Path, with_configs: bool) -> Path:
    """The pipeline as one original-layout file in `folder`; with its diffusers configs beside it (the weights
    deleted, so that every weight loaded comes from the file) or alone."""
    if with_configs:
        pipe.save_pretrained(folder, safe_serialization=True)
        for weights in folder.glob("*/*.safetensors"):
            weights.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    save_file(ldm_checkpoint(pipe), path)
    return path


def generate_small(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(7)
    return pipe("a woodcut", height=32, width=32, num_inference_steps=2, generator=generator, output_type="np").images


@pytest.mark.parametrize("build", [tiny.build_tiny_sd, sdxl_with_wider_second_encoder], ids=["sd", "sdxl"])
def test_single_file_checkpoint_loads_with_the_configs_beside_it(tmp_path, build):
    pipe = build()
    path = write_single_file(pipe, tmp_path / "model", with_configs=True)
    assert not list((tmp_path / "model").glob("*/*.safetensors"))
    loaded = loading.load_pipeline(str(path))
    assert type(loaded) is type(pipe) and loading.single_file_class(path) is type(pipe)
    for part in ("unet", "vae", "text_encoder", "text_encoder_2")[: 4 if families.of(pipe).name == "sdxl" else 3]:
        assert loading.module_fingerprint(getattr(loaded, part)) == loading.module_fingerprint(getattr(pipe, part))
    np.testing.assert_allclose(generate_small(loaded), generate_small(pipe), atol=1e-5)


def test_single_file_kind_comes_from_the_tensor_names(tmp_path):
    sd, sdxl = tmp_path / "sd.safetensors", tmp_path / "sdxl.safetensors"
    save_file({"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(2)}, sd)
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.ones(2)}, sdxl)
    assert loading.single_file_class(sd) is StableDiffusionPipeline
    assert loading.single_file_class(sdxl) is StableDiffusionXLPipeline


def test_single_file_without_configs_says_what_to_do(tmp_path):
    path = write_single_file(tiny.build_tiny_sd(), tmp_path / "alone", with_configs=False)
    with pytest.raises(loading.ModelLoadError, match="model_index.json") as info:
        loading.load_pipeline(str(path))
    assert "StableDiffusionPipeline" in str(info.value) and str(path) in str(info.value)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors")
    with pytest.raises(loading.ModelLoadError, match="cannot read the tensor names"):
        loading.load_pipeline(str(broken))


def test_single_file_beside_another_models_configs_is_refused(tmp_path):
    folder = tiny.save_tiny(tmp_path / "sd")
    write_single_file(sdxl_with_wider_second_encoder(), tmp_path / "xl", with_configs=False)
    path = shutil.copy(tmp_path / "xl" / "model.safetensors", folder / "xl.safetensors")
    with pytest.raises(loading.ModelLoadError, match="StableDiffusionXLPipeline checkpoint, but the diffusers folder"):
        loading.load_pipeline(str(path))


def test_single_file_that_diffusers_reads_only_in_part_is_refused(tmp_path):
    """The tiny SDXL's two 32-wide text encoders: diffusers fills the second with nothing and says nothing."""
    path = write_single_file(tiny.build_tiny_sdxl(), tmp_path / "model", with_configs=True)
    with pytest.raises(loading.ModelLoadError, match="no weights for part of text_encoder_2"):
        loading.load_pipeline(str(path))
