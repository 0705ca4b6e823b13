"""Charts for the pages, drawn with matplotlib (Agg, no display) as SVG data URIs: real axes, ticks, units and
a legend, so a reader can tell a loss's scale and where the kept step is.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot's global state, so pages can be
rendered from several threads. SVG text stays text (the browser's sans-serif draws it): the file is smaller and
a chart's labels and legend can be read back by tests and searched in the browser.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display here, in CI or in a container

from matplotlib.figure import Figure  # noqa: E402  (the backend is chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from artlora.pages.images import data_uri  # noqa: E402

Series = Sequence[tuple[int, float]]  # (step, value) points
_SIZE = (5.6, 2.6)  # inches (72 pt each): about 540 px wide, two charts side by side
KEPT_COLOUR = "#2a8a2a"


def _uri(figure: Figure) -> str:
    figure.tight_layout()
    buffer = io.BytesIO()
    # No date and a fixed id salt: the same numbers give the same bytes (pages compare equal across runs).
    with matplotlib.rc_context({"svg.hashsalt": "artlora", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return data_uri(buffer.getvalue(), "image/svg+xml")


def _figure() -> Figure:
    return Figure(figsize=_SIZE)


def steps(
    lines: Mapping[str, Series],
    *,
    ylabel: str,
    kept_step: int | None = None,
    log_y: bool = False,
    colours: Mapping[str, str] | None = None,
) -> str:
    """Values per training step, one line per name (in `colours[name]` where given); a dashed vertical line at
    the kept step. Empty string when no line has a point."""
    drawn = {name: points for name, points in lines.items() if points}
    if not drawn:
        return ""
    figure = _figure()
    axes = figure.add_subplot()
    for name, points in drawn.items():
        x, y = zip(*points, strict=True)
        colour = (colours or {}).get(name)
        axes.plot(x, y, marker="o" if len(points) < 30 else None, markersize=3, linewidth=1.4, label=name, color=colour)
    if kept_step is not None:
        axes.axvline(kept_step, color=KEPT_COLOUR, linestyle="--", linewidth=1.2, label=f"kept step {kept_step}")
    if log_y and all(v > 0 for points in drawn.values() for _, v in points):
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    axes.set_xlabel("training step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _uri(figure)


def bars(groups: Sequence[str], values: Mapping[str, Sequence[float]], *, ylabel: str) -> str:
    """Grouped bars: one group per name in `groups`, one bar per series in `values` (each as long as groups)."""
    if not groups or not values:
        return ""
    figure = _figure()
    axes = figure.add_subplot()
    width = 0.8 / len(values)
    for number, (name, heights) in enumerate(values.items()):
        offsets = [i + (number - (len(values) - 1) / 2) * width for i in range(len(groups))]
        axes.bar(offsets, heights, width=width, label=name)
    axes.set_xticks(range(len(groups)), groups, rotation=20 if len(groups) > 4 else 0, ha="right")
    axes.set_ylabel(ylabel)
    axes.grid(axis="y", alpha=0.3)
    # Above the bars, in one row: inside the axes it would hide the tallest of them.
    axes.legend(fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(values), frameon=False)
    return _uri(figure)


def curves(x: Sequence[float], lines: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str) -> str:
    """Lines over a shared x axis (for example distance against LoRA strength), one per name."""
    if not x or not lines:
        return ""
    figure = _figure()
    axes = figure.add_subplot()
    for name, values in lines.items():
        axes.plot(x, values, marker="o", markersize=4, linewidth=1.4, label=name)
    axes.set_xticks(list(x))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _uri(figure)
