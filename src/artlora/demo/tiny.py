"""Tiny Stable Diffusion pipelines built in code, with random weights: tests, the demo and CPU benchmarks run on
them with no downloads.

`build_tiny_sd` is SD 1.x-architecture (a 2-layer CLIP text encoder over a byte-level tokenizer, a small VAE
that downsamples by 4, a UNet with (32, 64) channels); `build_tiny_sd2` is SD 2.x-architecture (a wider GELU
text encoder as OpenCLIP's, linear attention projections, v-prediction); `build_tiny_sdxl` is SDXL-architecture
(two text encoders, pooled embeddings, size/crop time ids). All make 64 px images by default and are
deterministic per seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TINY_IMAGE_SIZE = 64


def byte_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over single bytes: every text maps to known ids, and no vocab file is downloaded."""
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = byte_chars + [char + "</w>" for char in byte_chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_text_config(tokenizer: CLIPTokenizer, **changes) -> CLIPTextConfig:
    values = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": tokenizer.model_max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return CLIPTextConfig(**{**values, **changes})


def tiny_text_encoder(tokenizer: CLIPTokenizer, **extra) -> CLIPTextModel:
    """The tiny CLIP text encoder (random weights), `extra` changing its config."""
    return CLIPTextModel(tiny_text_config(tokenizer, **extra))


# The UNet shape both tiny architectures share. The VAE downsamples by 4, so 16x16 latents are the 64 px images
# the pipelines make by default.
_TINY_UNET = {
    "sample_size": TINY_IMAGE_SIZE // 4,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (2, 4),
    "norm_num_groups": 32,
}


# Stable Diffusion's training noise schedule (SD 1.x, 2.x and SDXL alike).
SD_NOISE_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def tiny_unet(**extra) -> UNet2DConditionModel:
    """The tiny SD 1.x UNet (random weights), `extra` changing its arguments."""
    return UNet2DConditionModel(**{"cross_attention_dim": 32, **_TINY_UNET, **extra})


def _tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=TINY_IMAGE_SIZE,
    )


# What sets SD 2.x apart from 1.x, in miniature: OpenCLIP's wider text encoder with GELU (1024 wide against
# CLIP ViT-L's 768) and linear instead of 1x1-convolution projections into and out of the attention blocks.
_SD2_TEXT = {"hidden_size": 48, "hidden_act": "gelu"}
_SD2_UNET = {"cross_attention_dim": 48, "use_linear_projection": True}


def build_tiny_sd(seed: int = 0, prediction_type: str = "epsilon", *, sd2: bool = False) -> StableDiffusionPipeline:
    """A tiny SD 1.x-architecture pipeline (SD 2.x with `sd2`) with random weights, identical for equal seeds."""
    tokenizer = byte_tokenizer()
    # Seeding before each part keeps every part's weights independent of how the others are built.
    torch.manual_seed(seed)
    unet = tiny_unet(**(_SD2_UNET if sd2 else {}))
    torch.manual_seed(seed)
    vae = _tiny_vae()
    torch.manual_seed(seed)
    text_encoder = tiny_text_encoder(tokenizer, **(_SD2_TEXT if sd2 else {}))
    scheduler = DDIMScheduler(
        **SD_NOISE_SCHEDULE,
        prediction_type=prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    # eval() as from_pretrained does, so a built pipeline behaves exactly like a loaded one.
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sd2(seed: int = 0, prediction_type: str = "v_prediction") -> StableDiffusionPipeline:
    """A tiny SD 2.x-architecture pipeline; v-prediction by default, as SD 2.x's 768 px models."""
    return build_tiny_sd(seed, prediction_type, sd2=True)


# SDXL's own time-id embedding width is 256; the tiny one uses 8 of them per id (6 ids: size, crop, target).
TINY_SDXL_TIME_DIM = 8
TINY_SDXL_POOLED_DIM = 32


def _tiny_sdxl_unet(cross_attention_dim: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        **_TINY_UNET,
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=cross_attention_dim,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TINY_SDXL_TIME_DIM,
        projection_class_embeddings_input_dim=6 * TINY_SDXL_TIME_DIM + TINY_SDXL_POOLED_DIM,
    )


def build_tiny_sdxl(seed: int = 0, prediction_type: str = "epsilon") -> StableDiffusionXLPipeline:
    """A tiny SDXL-architecture pipeline with random weights, identical for equal seeds: two byte-level CLIP
    text encoders (the second with a projection, whose pooled output feeds the UNet's added embedding), a UNet
    with SDXL's "text_time" added conditioning and the tiny VAE."""
    tokenizer, tokenizer_2 = byte_tokenizer(), byte_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(tiny_text_config(tokenizer))
    torch.manual_seed(seed + 1)  # a different second encoder, as in SDXL
    text_encoder_2 = CLIPTextModelWithProjection(tiny_text_config(tokenizer_2, projection_dim=TINY_SDXL_POOLED_DIM))
    torch.manual_seed(seed)
    cross = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
    unet = _tiny_sdxl_unet(cross)
    torch.manual_seed(seed)
    vae = _tiny_vae()
    scheduler = EulerDiscreteScheduler(
        **SD_NOISE_SCHEDULE,
        prediction_type=prediction_type,
        timestep_spacing="leading",
        steps_offset=1,
    )
    return StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet.eval(),
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def build_tiny_sd3(seed: int = 0):
    """The tiny SD 3.5 (`demo.tiny_transformers`, which builds on this module)."""
    from artlora.demo import tiny_transformers

    return tiny_transformers.build_tiny_sd3(seed)


def build_tiny_flux(seed: int = 0):
    """The tiny Flux.1-dev (`demo.tiny_transformers`)."""
    from artlora.demo import tiny_transformers

    return tiny_transformers.build_tiny_flux(seed)


BUILDERS = {
    "sd1": build_tiny_sd,
    "sd2": build_tiny_sd2,
    "sdxl": build_tiny_sdxl,
    "sd3": build_tiny_sd3,
    "flux": build_tiny_flux,
}


def save_tiny(path: str | Path, arch: str = "sd1", seed: int = 0) -> Path:
    """Build the tiny pipeline of an architecture (`BUILDERS`: SD 1.x, SD 2.x with v-prediction, SDXL, SD 3.5,
    Flux.1-dev) and save it
    as a diffusers folder (safetensors weights)."""
    path = Path(path)
    BUILDERS[arch](seed).save_pretrained(path, safe_serialization=True)
    return path
