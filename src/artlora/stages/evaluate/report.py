"""The evaluation report: the base-vs-LoRA image grid and the HTML page that shows it with the metrics."""

from __future__ import annotations

import base64
import html
import io

from PIL import Image

from artlora.config import EvaluateConfig


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
