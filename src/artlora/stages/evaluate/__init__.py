"""Evaluate: the adapter against its base model, with evidence per style that the style was learned.

Everything is measured the same way for the base model and for base + LoRA, with fixed noise and seeds:
- held-out denoising loss on the validation split, overall and per style, beside the zero predictor's;
- style distances (colour and texture, `style_distance`) of images painted from each style's held-out captions
  to every style's held-out images: a confusion matrix for the base and for the LoRA, beside the same matrix for
  real training images (what learning the styles looks like) and the distance the VAE alone already costs;
- a LoRA strength sweep, how much prompts outside the styles change (content kept), and each painted image's
  nearest training image (memorisation);
- CLIP score and KID when a CLIP model is given locally (`clip_model`); otherwise the report says they were
  skipped.

The numbers go to the training's MLflow run as metrics; the report (HTML, with the training curve from the same
run) and its images go beside the adapter (`<run>/eval/`) and to the run's artifacts.
"""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass, field

import numpy as np
from diffusers import DDPMScheduler
from PIL import Image

from artlora.config import EvaluateConfig
from artlora.diffusion import loading
from artlora.diffusion.adapters import adapter_file, load_adapter, read_by_adapter
from artlora.diffusion.heldout import (
    HeldoutLoss,
    heldout_loss_by_style,
    heldout_metrics,
    validation_data,
    with_other_styles_captions,
)
from artlora.io import storage, tracking
from artlora.stages.evaluate import clip_metrics, painting, report
from artlora.stages.evaluate.memorisation import nearest_training_images
from artlora.stages.evaluate.style_distance import StyleDistance, combined, diagonal_minima, scales

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateResult:
    report_uri: str
    val_loss_base: float
    val_loss_lora: float
    metrics: dict[str, float] = field(default_factory=dict)  # every number logged to the run
    report_html: str = ""


@dataclass
class Side:
    """What one model (the base, or base + LoRA) did on every measure."""

    loss: HeldoutLoss
    by_style: dict[str, np.ndarray]  # style -> images painted from that style's held-out captions
    content: np.ndarray  # images of the content prompts
    grid: list[list[Image.Image]]  # the sample prompts x seeds
    matrices: dict[str, np.ndarray] = field(default_factory=dict)


def _paint_side(pipe, config: EvaluateConfig, prompts: dict[str, list[str]], loss: HeldoutLoss) -> Side:
    seeds = list(range(config.images_per_style))
    by_style = {
        style: painting.paint(pipe, captions, seeds[: len(captions)], config) for style, captions in prompts.items()
    }
    content_seeds = [seed for _ in config.content_prompts for seed in config.image_seeds]
    content_prompts = [prompt for prompt in config.content_prompts for _ in config.image_seeds]
    content = painting.paint(pipe, content_prompts, content_seeds, config)
    grid_prompts = [prompt for prompt in config.prompts for _ in config.image_seeds]
    grid = painting.paint(pipe, grid_prompts, list(config.image_seeds) * len(config.prompts), config)
    rows = [
        [Image.fromarray(image) for image in grid[i : i + len(config.image_seeds)]]
        for i in range(0, len(grid), len(config.image_seeds))
    ]
    return Side(loss, by_style, content, rows)


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean square pixel difference of two same-size uint8 images, colours in [0, 1]."""
    difference = (a.astype(np.float32) - b.astype(np.float32)) / 255
    return float(np.sqrt(np.mean(difference**2)))


def run(config: EvaluateConfig) -> EvaluateResult:
    config.require("adapter_uri", "cache_uri", "run_id")
    # Before any work: a bad base model or a tracking store that does not answer fails at once.
    loading.check_reference(config.base_model)
    clip_metrics.check_reference(config.clip_model)
    tracking.check()
    store = storage.get_storage()
    data = validation_data(config.cache_uri)
    index = store.get_json(config.cache_uri)
    real = painting.dataset_images(index["dataset_uri"], config.resolution, config.images_per_style)
    heldout = real.get("val") or real["train"]  # validation_data warned already when there is no split
    styles = sorted(heldout)
    prompts = {style: heldout[style][1] for style in styles}
    pipe = loading.load_pipeline(config.base_model)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    base = _paint_side(pipe, config, prompts, heldout_loss_by_style(pipe.unet, scheduler, data, *_noise(config)))
    base_gap = _caption_gap(pipe, scheduler, data, config, base.loss)
    vae_floor = {style: painting.through_vae(pipe.vae, heldout[style][0]) for style in styles}
    with tempfile.TemporaryDirectory() as adapter_dir:
        store.download_dir(config.adapter_uri, adapter_dir)
        load_adapter(pipe, adapter_file(adapter_dir))  # LoRA dropout off: it would blur the measure
    data = read_by_adapter(pipe, data)  # encoded again if the adapter trained the text encoder(s) too
    lora = _paint_side(pipe, config, prompts, heldout_loss_by_style(pipe.unet, scheduler, data, *_noise(config)))
    lora_gap = _caption_gap(pipe, scheduler, data, config, lora.loss)
    # Strengths 0 and 1 are the base's and the LoRA's first image per style (first caption, seed 0): reused.
    at_ends = {0.0: base.by_style, 1.0: lora.by_style}
    sweep_prompts = [prompts[style][0] for style in styles]
    sweep = {
        strength: np.stack([at_ends[strength][style][0] for style in styles])
        if strength in at_ends
        else painting.paint(pipe, sweep_prompts, [0] * len(styles), config, lora_scale=strength)
        for strength in config.strengths
    }
    extra = clip_metrics.measure(config.clip_model, prompts, lora.by_style, heldout)

    distance = StyleDistance(config.seed)
    columns = [heldout[style][0] for style in styles]
    training = real.get("train", heldout)
    reference = distance.matrices([training.get(style, heldout[style])[0] for style in styles], columns)
    unit = scales(reference)
    for side in (base, lora):
        side.matrices = distance.matrices([side.by_style[style] for style in styles], columns)
    floor = distance.matrices([vae_floor[style] for style in styles], columns)
    # Memorisation: the LoRA's images, in style order, against every training image, read a chunk at a time.
    painted = np.concatenate([lora.by_style[style] for style in styles])
    nearest = nearest_training_images(
        painted,
        painting.training_images(index["dataset_uri"], config.resolution),
        config.memorisation_pixel_distance,
        config.memorisation_hash_bits,
    )
    evidence = report.Evidence(styles, base, lora, reference, floor, unit, sweep, heldout, painted, nearest, extra)
    metrics = {
        **heldout_metrics(base.loss.loss, lora.loss.loss),
        "val_loss_zero_predictor": base.loss.zero_predictor,
        "caption_gap_base": base_gap,
        "caption_gap_lora": lora_gap,
        **{f"val_loss_base/{s}": v for s, v in base.loss.per_style.items()},
        **{f"val_loss_lora/{s}": v for s, v in lora.loss.per_style.items()},
        "style_hits_base": float(sum(diagonal_minima(combined(base.matrices, unit)))),
        "style_hits_lora": float(sum(diagonal_minima(combined(lora.matrices, unit)))),
        "style_hits_reference": float(sum(diagonal_minima(combined(reference, unit)))),
        **{f"style_distance_base/{s}": float(combined(base.matrices, unit)[i, i]) for i, s in enumerate(styles)},
        **{f"style_distance_lora/{s}": float(combined(lora.matrices, unit)[i, i]) for i, s in enumerate(styles)},
        "content_change": float(np.mean([_rms(a, b) for a, b in zip(base.content, lora.content, strict=True)])),
        "style_change": float(
            np.mean([_rms(a, b) for s in styles for a, b in zip(base.by_style[s], lora.by_style[s], strict=True)])
        ),
        "memorised_images": float(sum(match.flagged for match in nearest.matches)),
        **extra,
    }
    metrics = {key: value for key, value in metrics.items() if np.isfinite(value)}
    summary = _training_summary(store, config)
    html = report.render(config, metrics, evidence, summary, index)
    eval_uri = storage.join(config.adapter_uri.rstrip("/").rsplit("/", 1)[0], "eval")
    grid_png = _png(report.grid(base.grid, lora.grid))
    store.put_bytes(storage.join(eval_uri, "grid.png"), grid_png, content_type="image/png")
    store.put_json(storage.join(eval_uri, "metrics.json"), metrics)
    store.put_bytes(storage.join(eval_uri, "report.html"), html.encode(), content_type="text/html")
    with tracking.stage_run("evaluate", config, run_id=config.run_id):
        tracking.log_metrics(metrics)
        tracking.log_bytes(grid_png, "eval/grid.png")
        tracking.log_bytes(html.encode(), "eval/report.html")
    log.info(
        "held-out loss: base %.5f, LoRA %.5f; styles closest to their own: base %d, LoRA %d of %d",
        base.loss.loss,
        lora.loss.loss,
        metrics["style_hits_base"],
        metrics["style_hits_lora"],
        len(styles),
    )
    return EvaluateResult(storage.join(eval_uri, "report.html"), base.loss.loss, lora.loss.loss, metrics, html)


def _caption_gap(pipe, scheduler, data, config: EvaluateConfig, right: HeldoutLoss) -> float:
    """Held-out loss with each view given another style's caption, minus with its own (NaN with one style)."""
    swapped = with_other_styles_captions(data)
    if swapped is data:
        return float("nan")
    return heldout_loss_by_style(pipe.unet, scheduler, swapped, *_noise(config)).loss - right.loss


def _noise(config: EvaluateConfig) -> tuple[tuple[int, ...], int]:
    return config.loss_timesteps, config.seed


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _training_summary(store: storage.Storage, config: EvaluateConfig) -> dict:
    """The training's curve (loss, validation loss, learning rate by step) from its MLflow run, and the summary
    its completion marker holds (steps, the step whose adapter was kept, early stopping)."""
    completed = store.completion(config.adapter_uri)
    curves = {name: tracking.metric_history(config.run_id, name) for name in ("loss", "val_loss", "lr")}
    return {"completed": completed, "curves": curves}
