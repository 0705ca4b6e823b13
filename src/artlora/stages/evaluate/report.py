"""The evaluation report: one self-contained HTML page a person reads to judge whether the style was learned.

Sections: the training (curve, steps, the kept step), the dataset (version, images per style and split), the
metric table with a reference beside each number, per-style losses and style distances, the confusion matrices of
base and LoRA side by side, painted images per style, the strength sweep, content kept, memorisation pairs, and
CLIP score / KID or the line saying why they were skipped. Images are embedded (data: URIs), so the one file is
the whole report, in MLflow, in the object store and as the KFP HTML artifact.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from artlora import charts
from artlora.config import EvaluateConfig
from artlora.stages.evaluate import clip_metrics
from artlora.stages.evaluate.memorisation import Nearest
from artlora.stages.evaluate.sides import Side
from artlora.stages.evaluate.style_distance import MEASURES, combined, diagonal_minima

_STYLE = """
body{font-family:sans-serif;margin:2em;max-width:1300px} td,th{padding:.2em .6em;text-align:right}
th{background:#eee} td.l,th.l{text-align:left} table{border-collapse:collapse;margin:.5em 0}
.mat td{border:1px solid #ddd} .diag{background:#e6f4e6} .min{font-weight:bold} .side{display:inline-block;
margin-right:2em;vertical-align:top} img{image-rendering:pixelated} .note{color:#555;max-width:60em}
"""


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


def _png(image: Image.Image | np.ndarray, scale: int = 2) -> str:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _strip(images: np.ndarray, count: int | None = None) -> str:
    """Images side by side in one picture."""
    chosen = images[:count]
    return _png(np.concatenate(list(chosen), axis=1)) if len(chosen) else ""


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


def _e(text: Any) -> str:
    return html.escape(str(text))


def _matrix(title: str, matrix: np.ndarray, styles: list[str]) -> str:
    minima = matrix.argmin(axis=1)
    head = "".join(f"<th>{_e(s)}</th>" for s in styles)
    rows = []
    for i, style in enumerate(styles):
        cells = []
        for j, value in enumerate(matrix[i]):
            classes = " ".join(c for c, on in (("diag", i == j), ("min", j == minima[i])) if on)
            cells.append(f"<td class='{classes}'>{value:.3f}</td>")
        rows.append(f"<tr><th class='l'>{_e(style)}</th>{''.join(cells)}</tr>")
    hits = sum(diagonal_minima(matrix))
    return (
        f"<div class='side'><b>{_e(title)}</b>: {hits} of {len(styles)} rows closest to their own style"
        f"<table class='mat'><tr><th class='l'>painted for \\ held-out</th>{head}</tr>{''.join(rows)}</table></div>"
    )


def _dataset_counts(index: dict) -> str:
    counts = Counter((entry.get("style", ""), entry["split"]) for entry in index["entries"])
    styles = sorted({style for style, _ in counts})
    rows = "".join(
        f"<tr><td class='l'>{_e(s or '(none)')}</td><td>{counts[(s, 'train')]}</td><td>{counts[(s, 'val')]}</td></tr>"
        for s in styles
    )
    return (
        f"<p>Dataset version <code>{_e(index.get('dataset_fingerprint', '?'))}</code> "
        f"(<code>{_e(index.get('dataset_uri', ''))}</code>).</p>"
        f"<table><tr><th class='l'>style</th><th>train images</th><th>held-out images</th></tr>{rows}</table>"
    )


def render(config: EvaluateConfig, metrics: dict[str, float], ev: Evidence, training: dict, index: dict) -> str:
    styles = ev.styles
    base_c, lora_c, ref_c = (combined(m, ev.unit) for m in (ev.base.matrices, ev.lora.matrices, ev.reference))
    floor_c = combined(ev.floor, ev.unit)
    done = training["completed"]
    kept = done.get("adapter_step")
    stopped = "stopped early (validation loss no longer improved)" if done.get("stopped_early") else "ran every step"
    parts = [
        f"<h1>artlora evaluation</h1><p>Adapter <code>{_e(config.adapter_uri)}</code> on base model "
        f"<code>{_e(config.base_model)}</code>.</p>",
        "<h2>Training</h2>",
        f"<p>{done.get('steps', '?')} steps; training {stopped}; the adapter kept is the one of step "
        f"<b>{kept}</b> (best validation loss {done.get('best_val_loss')}).</p>",
        *(charts.line_chart(name, [(points, "#36c")]) for name, points in training["curves"].items()),
        "<h2>Dataset</h2>",
        _dataset_counts(index),
        "<h2>Metrics and their reference points</h2>",
        _metric_table(metrics, ev, base_c, lora_c, ref_c, floor_c),
        "<h2>Style confusion matrices</h2>",
        "<p class='note'>Row i: images painted from style i's held-out captions; column j: distance to style j's "
        "held-out images (colour and texture distances, each in units of the mean distance between different "
        "styles' real images, added). Green: the diagonal; bold: each row's minimum. A model that learned the "
        "styles puts each row's minimum on the diagonal, as the real training images do.</p>",
        _matrix("base model", base_c, styles),
        _matrix("base + LoRA", lora_c, styles),
        _matrix("real training images (reference)", ref_c, styles),
        "<details><summary>each measure alone</summary>",
        *(
            _matrix(f"{side} ({measure})", matrices[measure] / ev.unit[measure], styles)
            for measure in MEASURES
            for side, matrices in (("base", ev.base.matrices), ("LoRA", ev.lora.matrices))
        ),
        "</details>",
        "<h2>Painted per style</h2>",
        _style_rows(ev),
        "<h2>LoRA strength sweep</h2>",
        _sweep(ev),
        "<h2>Content kept</h2>",
        _content(config, metrics, ev),
        "<h2>Memorisation</h2>",
        _memorisation(config, ev),
        "<h2>CLIP score and KID</h2>",
        _clip(metrics),
        "<h2>Sample prompts</h2>",
        "<p>Base model (left half) and base + LoRA (right half); one row per prompt, seeds "
        f"{list(config.image_seeds)} in each half.</p><ol>"
        + "".join(f"<li>{_e(p)}</li>" for p in config.prompts)
        + "</ol>",
        _png(grid(ev.base.grid, ev.lora.grid)),
    ]
    body = "\n".join(parts)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>artlora evaluation</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def _metric_table(metrics, ev: Evidence, base_c, lora_c, ref_c, floor_c) -> str:
    rows = [
        (
            "held-out loss (lower is better)",
            metrics["val_loss_base"],
            metrics["val_loss_lora"],
            f"zero predictor {metrics['val_loss_zero_predictor']:.4f}",
        ),
        (
            "caption gap: held-out loss with another style's caption, minus with its own",
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
    table = ["<table><tr><th class='l'>measure</th><th>base</th><th>base + LoRA</th><th class='l'>reference</th></tr>"]
    for name, base, lora, reference in rows:
        cells = "".join(f"<td>{v:.4f}</td>" if isinstance(v, float) else f"<td>{_e(v)}</td>" for v in (base, lora))
        table.append(f"<tr><td class='l'>{_e(name)}</td>{cells}<td class='l'>{_e(reference)}</td></tr>")
    table.append("</table>")
    per_style = [
        "<table><tr><th class='l'>style</th><th>held-out loss, base</th><th>LoRA</th><th>change</th>"
        "<th>style distance, base</th><th>LoRA</th><th>real images (reference)</th><th>VAE floor</th></tr>"
    ]
    for i, style in enumerate(ev.styles):
        b, lo = ev.base.loss.per_style.get(style, float("nan")), ev.lora.loss.per_style.get(style, float("nan"))
        per_style.append(
            f"<tr><td class='l'>{_e(style)}</td><td>{b:.4f}</td><td>{lo:.4f}</td><td>{(lo / b - 1) * 100:+.1f}%</td>"
            f"<td>{base_c[i, i]:.3f}</td><td>{lora_c[i, i]:.3f}</td><td>{ref_c[i, i]:.3f}</td>"
            f"<td>{floor_c[i, i]:.3f}</td></tr>"
        )
    per_style.append("</table>")
    note = (
        "<p class='note'>Style distance: from the images painted for a style to that style's held-out images "
        "(lower is closer). Real images: other real images of the style; VAE floor: the held-out images after "
        "the VAE's encode and decode, the closest any painted image can come.</p>"
    )
    return "".join(table) + "".join(per_style) + note


def _style_rows(ev: Evidence, count: int = 6) -> str:
    rows = "".join(
        f"<tr><th class='l'>{_e(s)}</th><td>{_strip(ev.heldout[s][0], count)}</td>"
        f"<td>{_strip(ev.base.by_style[s], count)}</td><td>{_strip(ev.lora.by_style[s], count)}</td></tr>"
        for s in ev.styles
    )
    return (
        "<table><tr><th class='l'>style</th><th class='l'>real held-out images</th><th class='l'>base model</th>"
        f"<th class='l'>base + LoRA</th></tr>{rows}</table>"
    )


def _sweep(ev: Evidence) -> str:
    strengths = sorted(ev.sweep)
    head = "".join(f"<th>strength {s:g}</th>" for s in strengths)
    rows = "".join(
        f"<tr><th class='l'>{_e(style)}</th>" + "".join(f"<td>{_png(ev.sweep[s][i])}</td>" for s in strengths) + "</tr>"
        for i, style in enumerate(ev.styles)
    )
    return (
        "<p class='note'>Each row: one held-out caption of the style, seed 0, at each LoRA strength "
        f"(0 is the base model).</p><table><tr><th class='l'>style</th>{head}</tr>{rows}</table>"
    )


def _content(config: EvaluateConfig, metrics: dict, ev: Evidence) -> str:
    per = len(config.image_seeds)
    rows = "".join(
        f"<tr><td class='l'>{_e(p)}</td><td>{_strip(ev.base.content[i * per : (i + 1) * per])}</td>"
        f"<td>{_strip(ev.lora.content[i * per : (i + 1) * per])}</td></tr>"
        for i, p in enumerate(config.content_prompts)
    )
    return (
        f"<p class='note'>Prompts outside the styles, same seeds: the LoRA changed their pixels by "
        f"{metrics['content_change']:.4f} RMS on average, against {metrics['style_change']:.4f} on the style "
        "prompts. Much less change on content prompts means the adapter leaves what it was not taught alone.</p>"
        f"<table><tr><th class='l'>prompt</th><th class='l'>base model</th><th class='l'>base + LoRA</th></tr>"
        f"{rows}</table>"
    )


def _memorisation(config: EvaluateConfig, ev: Evidence, show: int = 6) -> str:
    matches, compared = ev.nearest.matches, ev.nearest.compared
    flagged = [m for m in matches if m.flagged]
    shown = flagged or sorted(matches, key=lambda m: m.pixel_distance)[:show]
    rows = "".join(
        f"<tr><td>{_png(ev.painted[m.generated])}</td><td>{_png(m.training_image)}</td>"
        f"<td>{m.pixel_distance:.4f}</td><td>{m.hash_bits}</td><td>{'near copy' if m.flagged else ''}</td></tr>"
        for m in shown[:show]
    )
    verdict = (
        f"{len(flagged)} of {len(matches)} painted images are flagged as near copies of one of the {compared} "
        "training images"
        if flagged
        else f"No painted image of {len(matches)} is a near copy of any of the {compared} training images; the "
        "closest pairs"
    )
    return (
        f"<p class='note'>{verdict} (flagged at RMS pixel distance at most {config.memorisation_pixel_distance} "
        f"and pHash within {config.memorisation_hash_bits} bits).</p><table><tr><th class='l'>painted</th>"
        f"<th class='l'>nearest training image</th><th>RMS distance</th><th>pHash bits</th><th></th></tr>{rows}"
        "</table>"
    )


def _clip(metrics: dict) -> str:
    if "clip_score" not in metrics:
        return f"<p>{_e(clip_metrics.SKIPPED)}.</p>"
    return f"<p>CLIP score {metrics['clip_score']:.3f}; KID on CLIP image features {metrics['kid']:.5f}.</p>"
