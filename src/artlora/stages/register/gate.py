"""The gate: which alias a new model version takes."""

from __future__ import annotations

CHAMPION, CHALLENGER = "champion", "challenger"


def choose_alias(metric: float, champion_metric: float | None) -> str:
    """`champion` when the gate metric (lower is better) beats the champion's, or there is no champion yet."""
    return CHAMPION if champion_metric is None or metric < champion_metric else CHALLENGER
