"""The evaluation report: one self-contained HTML page a person reads to judge whether the style was learned.

Sections: the training (loss, validation loss and learning-rate charts with the kept step marked, and the gallery
painted while it trained), the dataset, the metric table with a reference beside each number, per-style losses
and style distances (charts and tables), the confusion matrices of base and LoRA side by side, painted images per
style, the strength sweep (pictures and the distance curve), content kept, memorisation pairs, and CLIP score /
KID or the line saying why they were skipped. The page is `pages/templates/evaluate.html`; this module turns the
evidence into the values it shows. Images are embedded (data: URIs), so the one file is the whole report, in
MLflow, in the object store and as the KFP HTML artifact.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from artlora import pages
from artlora.config import EvaluateConfig
from artlora.pages import charts, images
from artlora.stages.evaluate import clip_metrics
from artlora.stages.evaluate.memorisation import Nearest
from artlora.stages.evaluate.sides import Side
from artlora.stages.evaluate.style_distance import MEASURES, combined, diagonal_minima

SECTIONS = (
    ("training", "Training"),
    ("dataset", "Dataset"),
    ("metrics", "Metrics"),
    ("per-style", "Per style"),
    ("confusion", "Style confusion matrices"),
    ("painted", "Painted per style"),
    ("sweep", "LoRA strength sweep"),
    ("content", "Content kept"),
    ("memorisation", "Memorisation"),
    ("clip", "CLIP score and KID"),
    ("samples", "Sample prompts"),
)


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """What evaluate measured, for the report."""

    styles: list[str]
    base: Side
    lora: Side
    reference: dict[str, np.ndarray]  # real training images of style i vs held-out images of style j
    floor: dict[str, np.ndarray]  # held-out images through the VAE vs held-out images
    unit: dict[str, float]
    sweep: dict[float, np.ndarray]  # strength -> one image per style
    heldout: dict[str, tuple[np.ndarray, list[str]]]
    painted: np.ndarray  # the LoRA's images of every style, in style order: what memorisation checked
    nearest: Nearest  # per painted image, its nearest training image
    extra: dict[str, float]
    sweep_distance: dict[float, list[float]] = field(default_factory=dict)  # strength -> style distance per style


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


def render(
    config: EvaluateConfig,
    metrics: dict[str, float],
    ev: Evidence,
    training: dict,
    index: dict,
    about: dict | None = None,
) -> str:
    """The report; `about` (what a cross-evaluation evaluated, on what) heads it when given."""
    base_c, lora_c, ref_c = (combined(m, ev.unit) for m in (ev.base.matrices, ev.lora.matrices, ev.reference))
    return pages.render(
        "evaluate.html",
        title="artlora evaluation",
        sections=SECTIONS,
        config=config,
        about=about,
        metrics=metrics,
        training=_training(training),
        dataset=_dataset(index),
        metric_rows=_metric_rows(metrics, ev),
        per_style=_per_style(ev, base_c, lora_c, ref_c, combined(ev.floor, ev.unit), metrics),
        matrices=[
            _matrix("base model", base_c, ev.styles),
            _matrix("base + LoRA", lora_c, ev.styles),
            _matrix("real training images (reference)", ref_c, ev.styles),
        ],
        measure_matrices=[
            _matrix(f"{side} ({measure})", matrices[measure] / ev.unit[measure], ev.styles)
            for measure in MEASURES
            for side, matrices in (("base", ev.base.matrices), ("LoRA", ev.lora.matrices))
        ],
        painted=[
            {
                "style": s,
                "real": images.strip(ev.heldout[s][0], 6),
                "base": images.strip(ev.base.by_style[s], 6),
                "lora": images.strip(ev.lora.by_style[s], 6),
            }
            for s in ev.styles
        ],
        sweep=_sweep(ev),
        content=_content(config, ev),
        memorisation=_memorisation(ev),
        clip_skipped=None if "clip_score" in metrics else clip_metrics.SKIPPED,
        samples=images.png(grid(ev.base.grid, ev.lora.grid)),
    )


def _training(training: dict) -> dict[str, Any]:
    """The training section: the completion summary, and charts of the run's curves with the kept step."""
    done, curves = training["completed"], training["curves"]
    kept = done.get("adapter_step")
    return {
        "steps": done.get("steps", "?"),
        "kept": kept,
        "stopped_early": bool(done.get("stopped_early")),
        "best_val_loss": done.get("best_val_loss"),
        "loss_chart": charts.steps(
            {"training loss (per step)": curves.get("loss", []), "validation loss": curves.get("val_loss", [])},
            ylabel="denoising loss (MSE)",
            kept_step=kept,
        ),
        "lr_chart": charts.steps({"learning rate": curves.get("lr", [])}, ylabel="learning rate", kept_step=kept),
        "gallery": [
            {"prompt": row["prompt"], "seed": row["seed"], "steps": row["steps"], "strip": images.strip(row["images"])}
            for row in training.get("gallery", [])
        ],
    }


def _dataset(index: dict) -> dict[str, Any]:
    counts = Counter((entry.get("style", ""), entry["split"]) for entry in index["entries"])
    styles = sorted({style for style, _ in counts})
    return {
        "fingerprint": index.get("dataset_fingerprint", "?"),
        "uri": index.get("dataset_uri", ""),
        "rows": [(s or "(none)", counts[(s, "train")], counts[(s, "val")]) for s in styles],
    }


def _matrix(title: str, matrix: np.ndarray, styles: list[str]) -> dict[str, Any]:
    minima = matrix.argmin(axis=1)
    rows = [
        {
            "style": style,
            "cells": [
                (value, " ".join(c for c, on in (("diag", i == j), ("min", j == minima[i])) if on))
                for j, value in enumerate(matrix[i])
            ],
        }
        for i, style in enumerate(styles)
    ]
    return {"title": title, "hits": int(sum(diagonal_minima(matrix))), "styles": styles, "rows": rows}


def _metric_rows(metrics: dict[str, float], ev: Evidence) -> list[tuple[str, Any, Any, str]]:
    return [
        (
            "held-out loss (lower is better)",
            metrics["val_loss_base"],
            metrics["val_loss_lora"],
            f"zero predictor {metrics['val_loss_zero_predictor']:.4f}",
        ),
        (
            "caption gap: held-out loss with another style's caption (one style: the empty caption), minus with "
            "its own",
            metrics.get("caption_gap_base", "n/a"),
            metrics.get("caption_gap_lora", "n/a"),
            "about 0 for a model that does not read the style from the caption",
        ),
        (
            "styles whose images are closest to their own held-out images",
            metrics["style_hits_base"],
            metrics["style_hits_lora"],
            f"real training images {metrics['style_hits_reference']:.0f} of {len(ev.styles)}",
        ),
        (
            "pixel change on content prompts (RMS)",
            "",
            metrics["content_change"],
            f"on style prompts {metrics['style_change']:.4f}",
        ),
        ("images flagged as near copies", "", metrics["memorised_images"], f"of {len(ev.nearest.matches)} painted"),
    ]


def _per_style(ev: Evidence, base_c, lora_c, ref_c, floor_c, metrics: dict[str, float]) -> dict[str, Any]:
    nan = float("nan")
    loss_base = [ev.base.loss.per_style.get(s, nan) for s in ev.styles]
    loss_lora = [ev.lora.loss.per_style.get(s, nan) for s in ev.styles]
    rows = [
        {
            "style": s,
            "loss_base": loss_base[i],
            "loss_lora": loss_lora[i],
            "change": (loss_lora[i] / loss_base[i] - 1) * 100,
            "distance": [base_c[i, i], lora_c[i, i], ref_c[i, i], floor_c[i, i]],
            "movement": [
                _ratio(lora_c[i, i], base_c[i, i]),
                _ratio(ref_c[i, i], base_c[i, i]),
                metrics.get(f"other_content_movement/{s}", nan),
            ],
        }
        for i, s in enumerate(ev.styles)
    ]
    diagonal = {
        "base": [base_c[i, i] for i in range(len(ev.styles))],
        "base + LoRA": [lora_c[i, i] for i in range(len(ev.styles))],
        "real images (reference)": [ref_c[i, i] for i in range(len(ev.styles))],
    }
    return {
        "rows": rows,
        "loss_chart": charts.bars(
            ev.styles, {"base": loss_base, "base + LoRA": loss_lora}, ylabel="held-out loss (MSE)"
        ),
        "distance_chart": charts.bars(ev.styles, diagonal, ylabel="style distance (units)"),
    }


def _ratio(value: float, over: float) -> float:
    return float(value / over) if over else float("nan")


def _sweep(ev: Evidence) -> dict[str, Any]:
    strengths = sorted(ev.sweep)
    chart = ""
    if ev.sweep_distance:
        measured = sorted(ev.sweep_distance)
        lines = {s: [ev.sweep_distance[k][i] for k in measured] for i, s in enumerate(ev.styles)}
        chart = charts.curves(measured, lines, xlabel="LoRA strength (0 = base model)", ylabel="style distance (units)")
    return {
        "strengths": strengths,
        "rows": [
            {"style": s, "pictures": [images.png(ev.sweep[k][i]) for k in strengths]} for i, s in enumerate(ev.styles)
        ],
        "chart": chart,
    }


def _content(config: EvaluateConfig, ev: Evidence) -> list[dict[str, str]]:
    per = len(config.image_seeds)
    return [
        {
            "prompt": p,
            "base": images.strip(ev.base.content[i * per : (i + 1) * per]),
            "lora": images.strip(ev.lora.content[i * per : (i + 1) * per]),
        }
        for i, p in enumerate(config.content_prompts)
    ]


def _memorisation(ev: Evidence, show: int = 6) -> dict[str, Any]:
    matches = ev.nearest.matches
    flagged = [m for m in matches if m.flagged]
    shown = flagged or sorted(matches, key=lambda m: m.pixel_distance)[:show]
    return {
        "flagged": len(flagged),
        "painted": len(matches),
        "compared": ev.nearest.compared,
        "rows": [
            {
                "painted": images.png(ev.painted[m.generated]),
                "training": images.png(m.training_image),
                "distance": m.pixel_distance,
                "bits": m.hash_bits,
                "flagged": m.flagged,
            }
            for m in shown[:show]
        ],
    }
