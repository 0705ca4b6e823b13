"""The kohya-layout file for SDXL UNets and for text encoders: diffusers' `load_lora_weights` is the oracle, so
each file is loaded into a fresh tiny pipeline and must give the adapted pipeline's image at a fixed seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig
from safetensors.torch import load_file as load

from artlora.config import TrainConfig
from artlora.demo import tiny
from artlora.diffusion import lora_keys
from artlora.diffusion.families import sgm_names
from artlora.stages.train import kohya, lora

ALL_GROUPS = ("attention", "feed_forward", "convolutions")
CLIP_ATTENTION = ["q_proj", "k_proj", "v_proj", "out_proj"]


def image(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    result = pipe("a woodcut", num_inference_steps=2, height=32, width=32, generator=generator, output_type="np")
    return result.images[0]


def randomize_lora(module: torch.nn.Module) -> None:
    """lora_B starts at zero; a random one makes the update visible."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)


def adapt(pipe, targets=ALL_GROUPS, text_encoders: tuple[str, ...] = ()):
    """Attach random LoRA adapters (alpha 2 != rank 4) to the UNet and the named text encoders."""
    config = TrainConfig(storage_root="s3://tests", base_model="tiny", rank=4, alpha=2.0, target_modules=targets)
    torch.manual_seed(0)
    lora.add_lora(pipe.unet, config)
    randomize_lora(pipe.unet)
    for name in text_encoders:
        encoder = getattr(pipe, name)
        encoder.add_adapter(
            LoraConfig(r=4, lora_alpha=2.0, target_modules=CLIP_ATTENTION, init_lora_weights="gaussian")
        )
        randomize_lora(encoder)
    for part in ("unet", *text_encoders):
        getattr(pipe, part).eval()
    return {name: getattr(pipe, name) for name in text_encoders}


def assert_round_trip(tmp_path, build, targets=ALL_GROUPS, text_encoders: tuple[str, ...] = ()):
    pipe = build()
    encoders = adapt(pipe, targets, text_encoders)
    adapted = image(pipe)
    path = kohya.save_kohya(pipe.unet, tmp_path / "style.safetensors", "epsilon", text_encoders=encoders)
    loaded = build()
    loaded.load_lora_weights(str(tmp_path), weight_name=path.name)
    assert np.abs(adapted - image(build())).max() > 1e-2, "the adapter changes the image"
    np.testing.assert_allclose(image(loaded), adapted, atol=1e-5)
    return path


def test_sdxl_unet_adapter_loads_in_diffusers_with_the_same_image(tmp_path):
    path = assert_round_trip(tmp_path, tiny.build_tiny_sdxl)
    keys = set(load(path))
    for name in (
        "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_out_0",  # 2nd transformer layer of down block 1
        "lora_unet_input_blocks_2_0_op",  # down block 0's downsampler
        "lora_unet_input_blocks_1_0_in_layers_2",
        "lora_unet_middle_block_1_transformer_blocks_0_ff_net_0_proj",
        "lora_unet_middle_block_2_out_layers_3",
        "lora_unet_output_blocks_1_0_skip_connection",
        "lora_unet_output_blocks_1_2_conv",  # up block 0's upsampler, after its resnet and transformer
    ):
        assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= keys, name
    assert not any("down_blocks" in key or "up_blocks" in key or "mid_block" in key for key in keys)


def test_sdxl_projections_and_embeddings_round_trip(tmp_path):
    targets = ("proj_in", "proj_out", "time_emb_proj", "conv_in", "conv_out", "time_embedding.linear_1", "linear_2")
    path = assert_round_trip(tmp_path, tiny.build_tiny_sdxl, targets)
    keys = set(load(path))
    assert "lora_unet_input_blocks_0_0.alpha" in keys and "lora_unet_out_2.alpha" in keys
    assert "lora_unet_output_blocks_3_0_emb_layers_1.alpha" in keys and "lora_unet_time_embed_0.alpha" in keys
    assert "lora_unet_time_embed_2.alpha" in keys and "lora_unet_label_emb_0_2.alpha" in keys


def test_sd_text_encoder_adapter_loads_in_diffusers_with_the_same_image(tmp_path):
    path = assert_round_trip(tmp_path, tiny.build_tiny_sd, ("attention",), ("text_encoder",))
    keys = set(load(path))
    assert "lora_te_text_model_encoder_layers_1_self_attn_out_proj.lora_up.weight" in keys
    assert {key.split("_")[1] for key in keys} == {"unet", "te"}


def test_sdxl_text_encoders_load_in_diffusers_with_the_same_image(tmp_path):
    path = assert_round_trip(tmp_path, tiny.build_tiny_sdxl, ("attention",), ("text_encoder", "text_encoder_2"))
    keys = set(load(path))
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert "lora_te2_text_model_encoder_layers_1_self_attn_v_proj.alpha" in keys
    assert {key.split("_")[1] for key in keys} == {"unet", "te1", "te2"}


def test_every_module_has_its_alpha_and_the_metadata_names_sdxl(tmp_path):
    pipe = tiny.build_tiny_sdxl()
    encoders = adapt(pipe, text_encoders=("text_encoder", "text_encoder_2"))
    path = kohya.save_kohya(pipe.unet, tmp_path / "style.safetensors", "epsilon", text_encoders=encoders)
    tensors = load(path)
    modules = {key.rsplit(".", 2)[0] for key in tensors if key.endswith((".lora_down.weight", ".lora_up.weight"))}
    assert modules and all(tensors[f"{module}.alpha"].item() == 2.0 for module in modules)
    assert len(tensors) == 3 * len(modules)
    metadata = lora.read_metadata(path, prefix="")
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0" and metadata["ss_v2"] == "False"
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"


def test_rslora_alpha_keeps_peft_scaling():
    pipe = tiny.build_tiny_sd()
    pipe.text_encoder.add_adapter(LoraConfig(r=4, lora_alpha=2.0, target_modules=["q_proj"], use_rslora=True))
    alphas = lora_keys.module_alphas(pipe.text_encoder)
    assert alphas and all(alpha / 4 == pytest.approx(2.0 / 4**0.5) for alpha in alphas.values())


def test_upsampler_without_attention_is_refused_clearly(tmp_path):
    """An SDXL-type UNet whose upsampling block has no transformer: kohya names its upsampler
    output_blocks_N_1_conv, which diffusers' reader files as a transformer."""
    config = {**tiny.build_tiny_sdxl().unet.config}
    config.update(down_block_types=config["down_block_types"][::-1], up_block_types=config["up_block_types"][::-1])
    unet = UNet2DConditionModel.from_config(config)
    lora.add_lora(unet, TrainConfig(storage_root="s3://tests", base_model="tiny", target_modules=ALL_GROUPS))
    with pytest.raises(kohya.UnsupportedAdapterError, match="upsampler"):
        kohya.save_kohya(unet, tmp_path / "x.safetensors", "epsilon")
    assert not (tmp_path / "x.safetensors").exists()
    assert sgm_names.sgm_path("up_blocks.0.upsamplers.0.conv", unet.config) == "output_blocks.1.1.conv"


def test_sdxl_dora_and_unknown_text_encoders_are_refused(tmp_path):
    pipe = tiny.build_tiny_sdxl()
    config = TrainConfig(storage_root="s3://tests", base_model="tiny", use_dora=True)
    lora.add_lora(pipe.unet, config)
    with pytest.raises(kohya.UnsupportedAdapterError, match="DoRA"):
        kohya.save_kohya(pipe.unet, tmp_path / "x.safetensors", "epsilon")
    sd = tiny.build_tiny_sd()
    adapt(sd, ("attention",))
    for encoders, error in (
        ({"text_encoder_2": sd.text_encoder}, "names only"),
        ({"text_encoder": sd.text_encoder}, "no LoRA"),
    ):
        with pytest.raises(ValueError, match=error):
            kohya.save_kohya(sd.unet, tmp_path / "x.safetensors", "epsilon", text_encoders=encoders)
    assert not (tmp_path / "x.safetensors").exists()
