"""Evaluate: the adapter against its base model, on held-out data and on sample images.

Two measures, both logged to the training's MLflow run and written beside the adapter (`<run>/eval/`):
- held-out denoising loss of the base UNet and of base+LoRA on the validation split, at fixed timesteps with
  fixed noise, so the two numbers (and numbers from other runs) are directly comparable;
- one grid of images per prompt and seed, base model on the left, base+LoRA on the right, and an HTML report.
"""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler
from PIL import Image

from artlora.config import EvaluateConfig
from artlora.diffusion import loading
from artlora.diffusion.adapters import adapter_file, load_adapter, read_by_adapter
from artlora.diffusion.heldout import heldout_loss, heldout_metrics, validation_data
from artlora.io import storage, tracking
from artlora.stages.evaluate.report import grid, report_html

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateResult:
    report_uri: str
    val_loss_base: float
    val_loss_lora: float


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


def run(config: EvaluateConfig) -> EvaluateResult:
    config.require("adapter_uri", "cache_uri", "run_id")
    # Before any work: a bad base model or a tracking store that does not answer fails at once.
    loading.check_reference(config.base_model)
    tracking.check()
    store = storage.get_storage()
    data = validation_data(config.cache_uri)
    pipe = loading.load_pipeline(config.base_model)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    base_loss = heldout_loss(pipe.unet, scheduler, data, config.loss_timesteps, config.seed)
    base_images = sample_images(pipe, config)
    with tempfile.TemporaryDirectory() as adapter_dir:
        store.download_dir(config.adapter_uri, adapter_dir)
        load_adapter(pipe, adapter_file(adapter_dir))  # LoRA dropout off: it would blur the measure
    data = read_by_adapter(pipe, data)  # encoded again if the adapter trained the text encoder(s) too
    lora_loss = heldout_loss(pipe.unet, scheduler, data, config.loss_timesteps, config.seed)
    lora_images = sample_images(pipe, config)

    metrics = heldout_metrics(base_loss, lora_loss)
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
