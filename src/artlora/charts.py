"""Line charts as inline SVG, for the HTML reports (no plotting library: the reports are plain files)."""

from __future__ import annotations

import html

Series = list[tuple[int, float]]  # (step, value) points


def _polyline(points: Series, box: tuple[float, float, float, float], colour: str) -> str:
    """An SVG line through the points, scaled into the box (lowest step, highest step, lowest, highest value)."""
    left, right, low, high = box
    coordinates = " ".join(
        f"{(step - left) / ((right - left) or 1) * 560 + 30:.1f},{200 - (value - low) / ((high - low) or 1) * 180:.1f}"
        for step, value in points
    )
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coordinates}"/>'


def line_chart(title: str, lines: list[tuple[Series, str]]) -> str:
    """One chart of (series, colour) lines against the step, sharing one scale; a sentence when none has points."""
    points = [point for series, _ in lines for point in series]
    if not points:
        return f"<p>Nothing was logged for {html.escape(title)}.</p>"
    steps, values = [step for step, _ in points], [value for _, value in points]
    box = (min(steps), max(steps), min(values), max(values))
    drawn = "".join(_polyline(series, box, colour) for series, colour in lines if series)
    return (
        f'<svg width="600" height="215" role="img" aria-label="{html.escape(title)} per step">'
        f'<rect x="30" y="20" width="560" height="180" fill="none" stroke="#ccc"/>{drawn}'
        f'<text x="30" y="14" font-size="11">{html.escape(title)}: {box[2]:.4g} to {box[3]:.4g}, '
        f"steps {box[0]} to {box[1]}</text></svg>"
    )
