"""Evaluate: the adapter against its base model, on held-out data and on sample images.

Two measures, both logged to the training's MLflow run and written beside the adapter (`<run>/eval/`):
- held-out denoising loss of the base UNet and of base+LoRA on the validation split, at fixed timesteps with
  fixed noise, so the two numbers (and numbers from other runs) are directly comparable;
- one grid of images per prompt and seed, base model on the left, base+LoRA on the right, and an HTML report.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import tempfile
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler
from PIL import Image

from artlora import models, storage, tracking
from artlora.config import EvaluateConfig
from artlora.latent_cache import LatentSet, load_split
from artlora.losses import diffusion_target
from artlora.text_encoding import TextEncoders
from artlora.trainer import added_cond

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateResult:
    report_uri: str
    val_loss_base: float
    val_loss_lora: float


@torch.no_grad()
def heldout_loss(unet, scheduler: DDPMScheduler, data: LatentSet, timesteps: tuple[int, ...], seed: int) -> float:
    """Mean MSE over every validation view at each fixed timestep, with noise fixed by the seed."""
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for group in data.groups:
        noise = torch.randn(group.latents.shape, generator=gen)
        for t in timesteps:
            for chunk in torch.arange(len(group)).split(32):
                latents, steps = group.latents[chunk], torch.full((len(chunk),), t, dtype=torch.long)
                noisy = scheduler.add_noise(latents, noise[chunk], steps)
                added = added_cond(group, chunk)  # SDXL's pooled embeds and time ids
                extra = {} if added is None else {"added_cond_kwargs": added}
                output = unet(noisy, steps, group.text[chunk], **extra).sample
                target = diffusion_target(scheduler, latents, noise[chunk], steps)
                total += torch.nn.functional.mse_loss(output, target, reduction="sum").item()
                count += target.numel()
    return total / count


@torch.no_grad()
def sample_images(pipe, config: EvaluateConfig) -> list[list[Image.Image]]:
    """One row per prompt, one image per seed."""
    rows = []
    for prompt in config.prompts:
        rows.append(
            [
                pipe(
                    prompt,
                    height=config.resolution,
                    width=config.resolution,
                    num_inference_steps=config.inference_steps,
                    guidance_scale=config.guidance_scale,
                    generator=torch.Generator().manual_seed(seed),
                ).images[0]
                for seed in config.image_seeds
            ]
        )
    return rows


def grid(base: list[list[Image.Image]], tuned: list[list[Image.Image]]) -> Image.Image:
    """Rows of prompts; in each row the base model's images, then the LoRA's, with a gap between."""
    size = base[0][0].width
    gap = max(4, size // 8)
    cols = len(base[0])
    canvas = Image.new("RGB", (2 * cols * size + gap, len(base) * size), "white")
    for row, (left, right) in enumerate(zip(base, tuned, strict=True)):
        for col, image in enumerate(left):
            canvas.paste(image, (col * size, row * size))
        for col, image in enumerate(right):
            canvas.paste(image, (cols * size + gap + col * size, row * size))
    return canvas


def report_html(config: EvaluateConfig, metrics: dict[str, float], image: Image.Image, adapter_uri: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.6f}</td></tr>" for k, v in metrics.items())
    prompts = "".join(f"<li>{html.escape(p)}</li>" for p in config.prompts)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>artlora evaluation</title>
<style>
body{{font-family:sans-serif;margin:2em}} td{{padding:.2em 1em}}
img{{image-rendering:pixelated;width:100%;max-width:1200px}}
</style>
</head><body>
<h1>artlora evaluation</h1>
<p>Adapter <code>{html.escape(adapter_uri)}</code> on <code>{html.escape(config.base_model)}</code>.</p>
<h2>Held-out denoising loss (lower is better)</h2>
<table>{rows}</table>
<p>Timesteps {list(config.loss_timesteps)}, fixed noise (seed {config.seed}).</p>
<h2>Samples: base model (left half) and base + LoRA (right half)</h2>
<p>One row per prompt, seeds {list(config.image_seeds)} in each half.</p><ol>{prompts}</ol>
<img alt="base vs LoRA grid" src="data:image/png;base64,{encoded}">
</body></html>
"""


def run(config: EvaluateConfig) -> EvaluateResult:
    config.require("adapter_uri", "cache_uri", "run_id")
    store = storage.get_storage()
    data = validation_data(config.cache_uri)
    pipe = models.load_pipeline(config.base_model)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    base_loss = heldout_loss(pipe.unet, scheduler, data, config.loss_timesteps, config.seed)
    base_images = sample_images(pipe, config)
    with tempfile.TemporaryDirectory() as adapter_dir:
        store.download_dir(config.adapter_uri, adapter_dir)
        pipe.load_lora_weights(adapter_dir)
    encoders = TextEncoders.of(pipe)
    for part in (pipe.unet, *encoders.encoders):
        part.eval()  # the injected LoRA layers start in training mode: their dropout would blur the measure
    if any(getattr(encoder, "peft_config", None) for encoder in encoders.encoders):
        data = data.reencoded(encoders.encode_captions)  # the adapter trained the text encoder(s) too
    lora_loss = heldout_loss(pipe.unet, scheduler, data, config.loss_timesteps, config.seed)
    lora_images = sample_images(pipe, config)

    metrics = {"val_loss_base": base_loss, "val_loss_lora": lora_loss, "val_loss_delta": lora_loss - base_loss}
    image = grid(base_images, lora_images)
    eval_uri = storage.join(config.adapter_uri.rstrip("/").rsplit("/", 1)[0], "eval")
    report = report_html(config, metrics, image, config.adapter_uri)
    png = io.BytesIO()
    image.save(png, format="PNG")
    store.put_bytes(storage.join(eval_uri, "grid.png"), png.getvalue(), content_type="image/png")
    store.put_json(storage.join(eval_uri, "metrics.json"), metrics)
    store.put_bytes(storage.join(eval_uri, "report.html"), report.encode(), content_type="text/html")
    with tracking.stage_run("evaluate", config, run_id=config.run_id):
        tracking.log_metrics(metrics)
        tracking.log_bytes(png.getvalue(), "eval/grid.png")
        tracking.log_bytes(report.encode(), "eval/report.html")
    log.info("held-out loss: base %.5f, LoRA %.5f", base_loss, lora_loss)
    return EvaluateResult(storage.join(eval_uri, "report.html"), base_loss, lora_loss)


def validation_data(cache_uri: str) -> LatentSet:
    """The validation split's first view per image; the training split if there is none (with a warning)."""
    try:
        return load_split(cache_uri, "val", views=1)
    except ValueError:
        log.warning("no validation images in %s: the held-out loss is measured on training images", cache_uri)
        return load_split(cache_uri, "train", views=1)
