"""Tiny SD 3.5 and Flux.1 pipelines built in code, with random weights (seeded): the transformer families' tests
and CPU benchmarks run on them with no downloads. Both make 64 px images (16x16 latents of 16 channels) and save
as diffusers folders with safetensors weights, like `demo.tiny`'s UNet pipelines.

SD 3.5 in miniature: an MMDiT of 2 blocks (the first with SD 3.5 Medium's second attention, RMS qk-norm), two
byte-level CLIPs with projections (penultimate states 32 wide each, pooled 32 + 32) and a 2-layer T5 64 wide
(the joint attention width). Flux.1 in miniature: one double- and one single-stream block with a guidance
embedding (dev), CLIP-L pooled (32) and T5 (64). The T5 tokenizer is a SentencePiece-style unigram vocabulary
over printable ASCII, built in code.
"""

from __future__ import annotations

import string

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel
from transformers import T5TokenizerFast as T5Tokenizer

from artlora.demo.tiny import TINY_IMAGE_SIZE, byte_tokenizer, tiny_text_config

T5_WIDTH = 64
LATENT_CHANNELS = 16
# SD 3.5's and Flux.1's VAE factors (their config.json): latents are (mean - shift) * scale.
SD3_VAE = {"scaling_factor": 1.5305, "shift_factor": 0.0609}
FLUX_VAE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}


def t5_tokenizer(max_length: int = 512) -> T5Tokenizer:
    """A T5 tokenizer over printable ASCII: each character a piece, word-initial ones with the `▁` marker."""
    chars = sorted(set(string.printable) - set(string.whitespace))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(char, -3.0) for char in chars] + [("▁" + char, -2.5) for char in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def tiny_t5(tokenizer: T5Tokenizer) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=T5_WIDTH,
        d_kv=16,
        d_ff=96,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def _clip(tokenizer, projection: bool, **changes):
    """The tiny CLIP text encoder of tiny.py with GELU and a 32-wide projection."""
    config = tiny_text_config(tokenizer, hidden_act="gelu", projection_dim=32, **changes)
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def tiny_vae(factors: dict[str, float]) -> AutoencoderKL:
    """A VAE that downsamples by 4 to 16 channels, without quant convs (as SD 3.5's and Flux.1's)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=16,
        sample_size=TINY_IMAGE_SIZE,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **factors,
    )


def build_tiny_sd3(seed: int = 0) -> StableDiffusion3Pipeline:
    """A tiny SD 3.5-architecture pipeline, identical for equal seeds."""
    tokenizer, tokenizer_2, tokenizer_3 = byte_tokenizer(), byte_tokenizer(), t5_tokenizer(256)
    torch.manual_seed(seed)
    text_encoder = _clip(tokenizer, projection=True)
    torch.manual_seed(seed + 1)
    text_encoder_2 = _clip(tokenizer_2, projection=True)
    torch.manual_seed(seed + 2)
    text_encoder_3 = tiny_t5(tokenizer_3)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=TINY_IMAGE_SIZE // 4,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=32,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    torch.manual_seed(seed)
    vae = tiny_vae(SD3_VAE)
    return StableDiffusion3Pipeline(
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3.eval(),
        tokenizer_3=tokenizer_3,
    )


def build_tiny_flux(seed: int = 0, guidance: bool = True) -> FluxPipeline:
    """A tiny Flux.1-architecture pipeline (dev, with the guidance embedding; schnell without `guidance`)."""
    tokenizer, tokenizer_2 = byte_tokenizer(), t5_tokenizer(512)
    torch.manual_seed(seed)
    text_encoder = _clip(tokenizer, projection=False)
    torch.manual_seed(seed + 2)
    text_encoder_2 = tiny_t5(tokenizer_2)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=LATENT_CHANNELS * 4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=32,
        guidance_embeds=guidance,
        axes_dims_rope=(4, 6, 6),
    )
    torch.manual_seed(seed)
    vae = tiny_vae(FLUX_VAE)
    # Flux.1-dev's scheduler: shift by resolution (its scheduler_config.json).
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tokenizer_2,
        transformer=transformer.eval(),
    )
