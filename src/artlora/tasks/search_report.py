"""The search's summary page: every trial's settings, metrics, loss curves and image grid, and the winner."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

from artlora import charts
from artlora.config import PipelineConfig

METRICS = ("val_loss_base", "val_loss_lora", "val_loss_delta", "val_loss_best")
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


@dataclass(frozen=True, kw_only=True)
class TrialReport:
    number: int
    run_id: str
    label: str  # the trial's settings that differ from the others'
    adapter_uri: str
    metrics: dict[str, float]
    curves: dict[str, list[tuple[int, float]]]  # metric name -> (step, value) points
    grid_png: bytes


def curve_svg(trials: list[TrialReport], metric: str) -> str:
    """One chart of `metric` against the step, one line per trial (in the table's colours)."""
    lines = [(trial.curves.get(metric, []), COLOURS[(trial.number - 1) % len(COLOURS)]) for trial in trials]
    return charts.line_chart(metric, lines)


def _row(trial: TrialReport, winner: TrialReport) -> str:
    colour = COLOURS[(trial.number - 1) % len(COLOURS)]
    cells = "".join(
        f"<td>{trial.metrics[name]:.6f}</td>" if name in trial.metrics else "<td>-</td>" for name in METRICS
    )
    mark = " <strong>winner</strong>" if trial is winner else ""
    return (
        f'<tr{" class=win" if trial is winner else ""}><td style="color:{colour}">&#9632; {trial.number}{mark}</td>'
        f"<td>{html.escape(trial.label)}</td>{cells}<td><code>{html.escape(trial.run_id)}</code></td></tr>"
    )


def _grid(trial: TrialReport) -> str:
    encoded = base64.b64encode(trial.grid_png).decode()
    return (
        f"<h3>Trial {trial.number}: {html.escape(trial.label)}</h3>"
        f'<img alt="trial {trial.number}: base vs LoRA" src="data:image/png;base64,{encoded}">'
    )


def summary_html(config: PipelineConfig, trials: list[TrialReport], winner: TrialReport) -> str:
    rule = config.register.ranking_rule
    metric = rule.metric_name
    header = "".join(f"<th>{name}</th>" for name in METRICS)
    rows = "".join(_row(trial, winner) for trial in trials)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>artlora search: {html.escape(config.model_name)}</title>
<style>
body{{font-family:sans-serif;margin:2em}} td,th{{padding:.2em .8em;text-align:left}} tr.win{{background:#e8f5e9}}
img{{image-rendering:pixelated;width:100%;max-width:900px}}
</style>
</head><body>
<h1>Search for {html.escape(config.model_name)}: {len(trials)} trials ({config.search.strategy})</h1>
<p>Winner: <strong>trial {winner.number}</strong> ({html.escape(winner.label)}), {html.escape(metric)}
{winner.metrics[metric]:.6f} ({rule.direction} is better), adapter <code>{html.escape(winner.adapter_uri)}</code>.
It is the one version this search registers.</p>
<h2>Trials</h2>
<table><tr><th>trial</th><th>settings</th>{header}<th>MLflow run</th></tr>{rows}</table>
<p>Every trial has the rest of its settings from <code>train:</code>; held-out losses at fixed timesteps and noise,
so the trials compare directly.</p>
<h2>Curves</h2>
{curve_svg(trials, "loss")}
{curve_svg(trials, "val_loss")}
<h2>Samples: base model (left half) and base + LoRA (right half)</h2>
{"".join(_grid(trial) for trial in trials)}
</body></html>
"""
