"""Both adapter files load with diffusers into the tiny pipeline and give the trained model's images at a fixed
seed: the diffusers/PEFT layout and the kohya (AUTOMATIC1111 / ComfyUI) layout, with their metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from peft.utils import get_peft_model_state_dict

from artlora.config import TrainConfig
from artlora.demo import tiny
from artlora.diffusion import lora_keys
from artlora.stages.train import kohya, lora

ALL_GROUPS = ("attention", "feed_forward", "convolutions")


def image(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe("a woodcut", num_inference_steps=2, height=32, width=32, generator=generator, output_type="np").images[
        0
    ]


def adapted_pipe(**changes):
    """The tiny pipeline with an adapter whose update is not zero (B drawn at random), alpha != rank, and
    training-time dropout (which must not follow the adapter into inference)."""
    config = TrainConfig(storage_root="s3://tests", base_model="tiny", rank=4, alpha=2.0, dropout=0.5, **changes)
    pipe = tiny.build_tiny_sd()
    torch.manual_seed(0)
    lora.add_lora(pipe.unet, config)
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
            if "lora_magnitude_vector" in name:
                param.mul_(1.2)
    return pipe, config


def test_both_layouts_load_in_diffusers_and_give_the_trained_images(tmp_path):
    pipe, config = adapted_pipe(target_modules=ALL_GROUPS)
    pipe.unet.eval()
    trained = image(pipe)
    metadata = lora.provenance(config, step=7, dataset_fingerprint="fp123")
    lora.save_adapter({"unet": pipe.unet}, tmp_path, metadata)
    kohya_file = kohya.save_kohya(pipe.unet, tmp_path / "artlora-run.safetensors", "epsilon", metadata)

    base = image(tiny.build_tiny_sd())
    from_folder = tiny.build_tiny_sd()
    from_folder.load_lora_weights(str(tmp_path))  # two files there: diffusers picks its own layout's
    from_kohya = tiny.build_tiny_sd()
    from_kohya.load_lora_weights(str(tmp_path), weight_name=kohya_file.name)
    assert np.abs(trained - base).max() > 1e-2, "the adapter changes the images"
    np.testing.assert_allclose(image(from_folder), trained, atol=1e-5)
    np.testing.assert_allclose(image(from_kohya), trained, atol=1e-5)


def test_files_carry_provenance_and_the_ui_metadata(tmp_path):
    pipe, config = adapted_pipe()
    metadata = lora.provenance(config, step=7, dataset_fingerprint="fp123", extra={"run_id": "r1"})
    diffusers_file = lora.save_adapter({"unet": pipe.unet}, tmp_path, metadata)
    kohya_file = kohya.save_kohya(pipe.unet, tmp_path / "artlora-run.safetensors", "epsilon", metadata)
    for path in (diffusers_file, kohya_file):
        ours = lora.read_metadata(path)
        assert ours["artlora.base_model"] == "tiny" and ours["artlora.dataset_fingerprint"] == "fp123"
        assert ours["artlora.step"] == "7" and ours["artlora.run_id"] == "r1"
        assert TrainConfig.model_validate_json(ours["artlora.config"]) == config
    peft_config = json.loads(lora.read_metadata(diffusers_file, prefix="")["lora_adapter_metadata"])
    assert (peft_config["unet.r"], peft_config["unet.lora_alpha"]) == (4, 2.0)
    kohya_meta = lora.read_metadata(kohya_file, prefix="")
    assert kohya_meta["ss_network_dim"] == "4" and kohya_meta["ss_network_alpha"] == "2.0"
    assert kohya_meta["modelspec.architecture"] == "stable-diffusion-v1/lora"


def test_kohya_keys_and_alpha():
    pipe, _ = adapted_pipe(target_modules=ALL_GROUPS)
    tensors = lora_keys.kohya_state_dict(get_peft_model_state_dict(pipe.unet), alpha=2.0)
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert tensors[f"{name}.lora_down.weight"].shape == (4, 64) and tensors[f"{name}.lora_up.weight"].shape == (64, 4)
    assert tensors[f"{name}.alpha"].item() == 2.0
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0.alpha" in tensors
    assert "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight" in tensors
    assert "lora_unet_down_blocks_0_downsamplers_0_conv.lora_up.weight" in tensors
    assert all(key.startswith("lora_unet_") for key in tensors)


def test_dora_ships_in_the_diffusers_layout_only(tmp_path):
    pipe, _ = adapted_pipe(target_modules=("attention", "feed_forward"), use_dora=True)
    pipe.unet.eval()
    trained = image(pipe)
    lora.save_adapter({"unet": pipe.unet}, tmp_path)
    loaded = tiny.build_tiny_sd()
    loaded.load_lora_weights(str(tmp_path))
    np.testing.assert_allclose(image(loaded), trained, atol=1e-5)
    with pytest.raises(kohya.UnsupportedAdapterError, match="DoRA"):
        kohya.save_kohya(pipe.unet, tmp_path / "dora.safetensors", "epsilon")
