"""The pretrained tiny base: a tiny Stable Diffusion that has learned to paint, built by artlora on the CPU.

A random tiny model (`demo.tiny`) is enough for tests of shapes and plumbing, but a LoRA trained on it learns
nothing one can see: its VAE's latents are near zero and its UNet cannot denoise. This base is trained, offline and
deterministically, on generic procedural families that hold none of the demo's art styles:

1. the VAE as an autoencoder, on the "toy scenes" (`toy_scenes`) and on "texture patches" (`textures`: fine
   lines, hatching, dot fields, tiles, hard edges, washes and noise at random scales and colours), mostly on
   random crops, which are cheap for a convolutional net, then on whole images so that its normalisation
   statistics match use; and the latent scaling factor set from the data so that latents have unit variance, as
   Stable Diffusion's are. Trained on toy scenes alone (600 steps) it carried the demo styles' dots, lines and
   hard edges at only 16 to 17 dB PSNR, too blurred for a LoRA to learn them; build.json records the figure per
   demo style (`style_psnr`: the styles are never trained on, so they are a fair held-out measure);
2. the UNet (v-prediction under SD's noise schedule) together with the text encoder, on captioned scenes. Each
   caption word has a token of its own (as common words have in CLIP's vocabulary); words spelled out in single
   bytes now and then teach the encoder what unknown words (a style's name) are made of.

The build takes about 35 minutes on one CPU thread (2065 s of wall time measured on a busy 2-core machine: VAE
1008 s, UNet 1019 s; 387 s before the VAE trained 5000 steps on textures and the UNet 3000). The result is
committed (`tiny_pretrained/`, safetensors) with the digest of the recipe that made it; `ensure()` returns it
while that digest is the current recipe's, and otherwise builds once into the work folder's cache, keyed by the
recipe's digest.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from tokenizers import pre_tokenizers
from transformers import CLIPTextModel, CLIPTokenizer

from artlora.demo import sample_data, textures, toy_scenes
from artlora.demo.tiny import SD_NOISE_SCHEDULE, tiny_text_encoder, tiny_unet
from artlora.io import settings

log = logging.getLogger(__name__)

# Bump when the build code changes what a recipe makes; the digest covers it and the recipe.
BUILD_VERSION = 2
RECIPE: dict = {
    "seed": 0,
    "image_size": 64,
    "vae_channels": [16, 32, 64],  # 4x downsampling; narrow at full resolution for speed
    "latent_channels": 4,
    "vae_images": 4000,  # toy scenes
    "vae_textures": 6000,  # texture patches: lines, dots, tiles, edges, washes (`textures`)
    "vae_steps": 5000,
    "vae_batch": 64,
    "vae_crop": 16,
    "vae_full_steps": 500,  # the last steps on whole images
    "vae_full_batch": 8,
    "vae_lr": 2e-3,
    "vae_kl": 1e-4,
    "unet_channels": [32, 64],
    # The UNet learns a simpler subset of the scenes than the VAE: enough to denoise well within minutes.
    "unet_scenes": {
        "backgrounds": ["plain", "gradient", "stripes"],
        "shapes": ["circle", "square", "triangle", "ring"],
        "counts": [0.2, 0.8],
    },
    "unet_images": 6000,
    "unet_steps": 3000,
    "unet_batch": 16,
    "unet_lr": 2e-3,
    "text_lr": 1e-3,
    "warmup": 50,
    "caption_dropout": 0.1,
    "spell_dropout": 0.3,
    "ema": 0.995,
    "heldout_images": 256,
}
HELDOUT_SEED = 1  # held-out scenes come from another seed of the family
# Demo-style images the VAE is measured on: indices the demo's seed-0 `sample_data.generate` (500 images) never
# paints.
STYLE_HELDOUT_START = 1000
STYLE_HELDOUT_COUNT = 40
LOSS_TIMESTEPS = (100, 300, 500, 700, 900)
COMMITTED = Path(__file__).parent / "tiny_pretrained"
BUILD_RECORD = "build.json"


def recipe_digest(recipe: dict | None = None) -> str:
    """The digest a build of `recipe` (the current RECIPE by default) is known by."""
    text = json.dumps({"recipe": RECIPE if recipe is None else recipe, "build_version": BUILD_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure(rebuild: bool = False, progress: Callable[[str], None] = log.info) -> Path:
    """The pretrained tiny base's diffusers folder: the committed one while the recipe matches it, else the work
    folder's cached build of the current recipe, built now if there is none (or if `rebuild`)."""
    digest = recipe_digest()
    if not rebuild and _built_by(COMMITTED) == digest:
        return COMMITTED
    cached = settings.work_dir() / "cache" / "tiny-sd-pretrained" / digest
    if not rebuild and _built_by(cached) == digest:
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its place and renamed in, so a half-built folder is never taken for a whole one.
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        build(Path(tmp) / "model", progress=progress)
        if cached.exists():
            shutil.rmtree(cached)
        os.replace(Path(tmp) / "model", cached)
    return cached


def _built_by(folder: Path) -> str | None:
    try:
        return json.loads((folder / BUILD_RECORD).read_text())["recipe_digest"]
    except (OSError, ValueError, KeyError):
        return None


# -- the parts ---------------------------------------------------------------------------------------------


def word_tokenizer(words) -> CLIPTokenizer:
    """CLIP's byte-level tokenizer with BPE merges that make each of `words` a single token; any other word
    falls back to bytes, as a rare word does in CLIP's own vocabulary."""
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []

    def make() -> CLIPTokenizer:
        vocab = {t: i for i, t in enumerate(dict.fromkeys([*tokens, "<|startoftext|>", "<|endoftext|>"]))}
        return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=77)

    # BPE applies the earliest merge first, so a merge added for one word can split another differently: repeat,
    # merging whatever pieces are left, until every word is one token.
    for _ in range(20):
        tokenizer = make()
        split = [pieces for pieces in map(tokenizer.tokenize, words) if len(pieces) > 1]
        if not split:
            return tokenizer
        for pieces in split:
            while len(pieces) > 1:
                pair = (pieces[0], pieces[1])
                if pair not in merges:
                    merges.append(pair)
                    tokens.append(pair[0] + pair[1])
                pieces = [pair[0] + pair[1], *pieces[2:]]
    raise RuntimeError("the word tokenizer's merges did not settle")


def _parts(r: dict) -> tuple[CLIPTokenizer, CLIPTextModel, AutoencoderKL, UNet2DConditionModel]:
    tokenizer = word_tokenizer(toy_scenes.WORDS)
    torch.manual_seed(r["seed"])
    unet = tiny_unet(
        sample_size=r["image_size"] // 4,
        in_channels=r["latent_channels"],
        out_channels=r["latent_channels"],
        block_out_channels=tuple(r["unet_channels"]),
    )
    torch.manual_seed(r["seed"])
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=tuple(r["vae_channels"]),
        layers_per_block=1,
        latent_channels=r["latent_channels"],
        norm_num_groups=8,
        sample_size=r["image_size"],
    )
    torch.manual_seed(r["seed"])
    text_encoder = tiny_text_encoder(tokenizer)
    return tokenizer, text_encoder, vae, unet


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def _ids(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def _spelled_ids(tokenizer: CLIPTokenizer, captions: list[str], gen: torch.Generator, chance: float) -> torch.Tensor:
    """Token ids with each word, by `chance`, spelled out: in single bytes, or as its prefix's pieces and then its
    last letter (as unknown words meet the vocabulary). Without this the encoder gives every unknown word nearly
    the same states, and a LoRA could not tell one style's captions from another's."""
    vocab = tokenizer.get_vocab()
    rows = []
    for caption in captions:
        pieces = []
        for word in caption.split():
            draw = torch.rand((), generator=gen).item()
            if draw < chance / 2 or (draw < chance and len(word) < 3):
                pieces += [*word[:-1], word[-1] + "</w>"]
            elif draw < chance:
                head = tokenizer.tokenize(word[:-1])
                pieces += [*head[:-1], head[-1].removesuffix("</w>"), word[-1] + "</w>"]
            else:
                pieces += tokenizer.tokenize(word)
        row = [tokenizer.bos_token_id, *(vocab[p] for p in pieces)][:76] + [tokenizer.eos_token_id]
        rows.append(row + [tokenizer.pad_token_id] * (77 - len(row)))
    return torch.tensor(rows)


def _warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# -- training ----------------------------------------------------------------------------------------------


def _train_vae(vae: AutoencoderKL, pixels: torch.Tensor, r: dict, progress: Callable[[str], None]) -> None:
    gen = torch.Generator().manual_seed(r["seed"] + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=r["vae_lr"], weight_decay=0.0)
    crop, size, steps = r["vae_crop"], r["image_size"], r["vae_steps"]
    vae.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = r["vae_lr"] * _warmup_cosine(step, steps, 20)
        whole = step >= steps - r["vae_full_steps"]
        x = pixels[torch.randint(0, len(pixels), (r["vae_full_batch"] if whole else r["vae_batch"],), generator=gen)]
        if not whole:
            top, left = torch.randint(0, size - crop + 1, (2,), generator=gen).tolist()
            x = x[:, :, top : top + crop, left : left + crop]
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(-1)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.mean).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = 0.5 * (posterior.mean.square() + posterior.var - 1 - posterior.logvar).mean()
        opt.zero_grad(set_to_none=True)
        (rec + r["vae_kl"] * kl).backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            progress(f"VAE step {step + 1}/{steps}: reconstruction loss {rec.item():.4f}")
    vae.eval().requires_grad_(False)


def _train_unet(unet, text_encoder, tokenizer, latents, captions, r: dict, progress) -> UNet2DConditionModel:
    """The UNet and text encoder on v-prediction at uniform timesteps; returns the EMA UNet (the text encoder's
    EMA weights are loaded into it in place)."""
    gen = torch.Generator().manual_seed(r["seed"] + 2)
    scheduler = DDPMScheduler(**SD_NOISE_SCHEDULE, prediction_type="v_prediction")
    empty = _ids(tokenizer, [""])
    params = [
        {"params": list(unet.parameters()), "lr": r["unet_lr"]},
        {"params": list(text_encoder.parameters()), "lr": r["text_lr"]},
    ]
    opt = torch.optim.AdamW(params, weight_decay=0.01)
    peaks = [group["lr"] for group in opt.param_groups]
    ema_unet = copy.deepcopy(unet).requires_grad_(False)
    ema_text = copy.deepcopy(text_encoder).requires_grad_(False)
    unet.train(), text_encoder.train()
    steps, running = r["unet_steps"], []
    for step in range(steps):
        for group, peak in zip(opt.param_groups, peaks, strict=True):
            group["lr"] = peak * _warmup_cosine(step, steps, r["warmup"])
        idx = torch.randint(0, len(latents), (r["unet_batch"],), generator=gen)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (len(idx),), generator=gen)
        drop = torch.rand(len(idx), generator=gen) < r["caption_dropout"]
        ids = _spelled_ids(tokenizer, [captions[i] for i in idx.tolist()], gen, r["spell_dropout"])
        text = text_encoder(torch.where(drop[:, None], empty, ids))[0]
        pred = unet(scheduler.add_noise(x0, noise, t), t, text).sample
        loss = F.mse_loss(pred, scheduler.get_velocity(x0, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for group in params for p in group["params"]], 1.0)
        opt.step()
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_text, text_encoder)):
                for pe, p in zip(ema.parameters(), live.parameters(), strict=True):
                    pe.lerp_(p, 1 - r["ema"])
        running.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            progress(f"UNet step {step + 1}/{steps}: loss {np.mean(running[-100:]):.4f} (mean of the last 100)")
    text_encoder.load_state_dict(ema_text.state_dict())
    text_encoder.eval().requires_grad_(False)
    return ema_unet.eval()


@torch.no_grad()
def _encode(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """Posterior means, unscaled (augment encodes the same way)."""
    return torch.cat([vae.encode(pixels[i : i + 64]).latent_dist.mean for i in range(0, len(pixels), 64)])


@torch.no_grad()
def _heldout(unet, text_encoder, tokenizer, latents, captions) -> dict[str, float]:
    """Held-out v-prediction loss at fixed timesteps and noise, with the right captions, with shuffled ones, and
    the zero predictor's: how far below "predict nothing" the base is, and whether it reads its captions."""
    scheduler = DDPMScheduler(**SD_NOISE_SCHEDULE, prediction_type="v_prediction")
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    text = torch.cat([text_encoder(_ids(tokenizer, captions[i : i + 256]))[0] for i in range(0, len(captions), 256)])
    shuffled = text[torch.randperm(len(text), generator=torch.Generator().manual_seed(0))]
    sums = {"loss": 0.0, "loss_shuffled_captions": 0.0, "zero_predictor": 0.0}
    for t in LOSS_TIMESTEPS:
        steps = torch.full((len(latents),), t)
        noisy = scheduler.add_noise(latents, noise, steps)
        target = scheduler.get_velocity(latents, noise, steps)
        sums["loss"] += F.mse_loss(unet(noisy, steps, text).sample, target).item()
        sums["loss_shuffled_captions"] += F.mse_loss(unet(noisy, steps, shuffled).sample, target).item()
        sums["zero_predictor"] += target.square().mean().item()
    return {key: value / len(LOSS_TIMESTEPS) for key, value in sums.items()}


def style_psnr(vae: AutoencoderKL, count: int, start: int = STYLE_HELDOUT_START) -> dict[str, float]:
    """The VAE's reconstruction PSNR (dB, pixels in [-1, 1]) per demo style, on `count` images of each from
    `start` on, painted at the demo's 128 px and resized to 64 px: how well the base can carry what a style LoRA
    is to learn. The base never trains on these styles, so measuring on them is fair."""
    psnr = {}
    for style in sample_data.STYLES:
        images = [sample_data.render(style, start + i, size=128, seed=0)[0] for i in range(count)]
        size = (vae.config.sample_size, vae.config.sample_size)
        pixels = _pixels(np.stack([np.asarray(im.resize(size, Image.Resampling.BICUBIC)) for im in images]))
        with torch.no_grad():
            recon = vae.decode(_encode(vae, pixels)).sample.clamp(-1, 1)
        psnr[style] = 10 * math.log10(4 / F.mse_loss(recon, pixels).item())
    return psnr


def build(out: Path, recipe: dict | None = None, progress: Callable[[str], None] = log.info) -> dict:
    """Train the tiny base by `recipe` and save it to `out` (diffusers layout, safetensors) with `build.json`:
    the recipe's digest, the measures of the result and the time each part took. Returns that record.

    It runs on one CPU thread: floating-point sums split over threads round differently, and training carries
    such differences on, so only a single-threaded build gives the same weights on every machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(out, RECIPE if recipe is None else recipe, progress)
    finally:
        torch.set_num_threads(threads)


def _build(out: Path, recipe: dict, progress: Callable[[str], None]) -> dict:
    r, times = recipe, {}
    started = time.perf_counter()
    tokenizer, text_encoder, vae, unet = _parts(r)
    vae_pixels = _pixels(
        np.concatenate(
            [
                toy_scenes.dataset(r["vae_images"], r["image_size"], r["seed"])[0],
                textures.dataset(r["vae_textures"], r["image_size"], r["seed"]),
            ]
        )
    )
    images, captions = toy_scenes.dataset(r["unet_images"], r["image_size"], r["seed"], **r["unet_scenes"])
    held_vae = _pixels(toy_scenes.dataset(r["heldout_images"], r["image_size"], HELDOUT_SEED)[0])
    held_images, held_captions = toy_scenes.dataset(
        r["heldout_images"], r["image_size"], HELDOUT_SEED, **r["unet_scenes"]
    )
    times["data_s"] = time.perf_counter() - started

    mark = time.perf_counter()
    _train_vae(vae, vae_pixels, r, progress)
    times["vae_s"] = time.perf_counter() - mark
    raw = _encode(vae, _pixels(images))
    std = raw.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)  # unit-variance latents, as Stable Diffusion's
    mark = time.perf_counter()
    unet = _train_unet(unet, text_encoder, tokenizer, raw / std, captions, r, progress)
    times["unet_s"] = time.perf_counter() - mark
    times["total_s"] = time.perf_counter() - started

    with torch.no_grad():
        recon = vae.decode(_encode(vae, held_vae)).sample
    mse = F.mse_loss(recon, held_vae).item()
    held_latents = _encode(vae, _pixels(held_images)) / std
    record: dict[str, Any] = {
        "recipe_digest": recipe_digest(recipe),
        "recipe": recipe,
        "vae_heldout_psnr_db": 10 * math.log10(4 / mse),  # pixels in [-1, 1]: peak-to-peak 2
        "vae_demo_style_psnr_db": style_psnr(vae, STYLE_HELDOUT_COUNT),
        "latent_std_unscaled": std,
        "scaling_factor": 1.0 / std,
        "unet_heldout": _heldout(unet, text_encoder, tokenizer, held_latents, held_captions),
        "build_times": times,
        "torch_version": torch.__version__,
    }
    scheduler = DDIMScheduler(
        **SD_NOISE_SCHEDULE,
        prediction_type="v_prediction",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    (out / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    progress(
        f"built in {times['total_s']:.0f} s: VAE PSNR {record['vae_heldout_psnr_db']:.1f} dB, held-out loss "
        f"{record['unet_heldout']['loss']:.3f} (zero predictor {record['unet_heldout']['zero_predictor']:.3f})"
    )
    return record
