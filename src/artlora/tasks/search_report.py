"""The search's summary page: every trial's settings, metrics, loss curves and image grid, and the winner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from artlora import pages
from artlora.config import PipelineConfig
from artlora.pages import charts, images

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


def _row(trial: TrialReport, winner: TrialReport) -> dict[str, Any]:
    return {
        "number": trial.number,
        "label": trial.label,
        "colour": colour(trial),
        "winner": trial is winner,
        "cells": [trial.metrics.get(name) for name in METRICS],
        "run_id": trial.run_id,
    }


def colour(trial: TrialReport) -> str:
    return COLOURS[(trial.number - 1) % len(COLOURS)]


def curve_chart(trials: list[TrialReport], metric: str, ylabel: str) -> str:
    """One chart of `metric` against the step, one line per trial (in the table's colours)."""
    lines = {f"trial {t.number}": t.curves.get(metric, []) for t in trials}
    return charts.steps(lines, ylabel=ylabel, colours={f"trial {t.number}": colour(t) for t in trials})


def summary_html(config: PipelineConfig, trials: list[TrialReport], winner: TrialReport) -> str:
    rule = config.register.ranking_rule
    return pages.render(
        "search.html",
        title=f"artlora search: {config.model_name}",
        config=config,
        trials=trials,
        winner=winner,
        metric=rule.metric_name,
        direction=rule.direction,
        metric_names=METRICS,
        rows=[_row(trial, winner) for trial in trials],
        loss_chart=curve_chart(trials, "loss", "training loss (MSE)"),
        val_chart=curve_chart(trials, "val_loss", "validation loss (MSE)"),
        grids=[
            {
                "number": t.number,
                "label": t.label,
                "uri": images.data_uri(t.grid_png, "image/png") if t.grid_png else "",
            }
            for t in trials
        ],
    )
