"""Trend charts as PNG bytes, drawn on matplotlib Figures without pyplot's global state."""

from __future__ import annotations

import io
from collections.abc import Sequence
from itertools import cycle

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from diffbench.regressions import Change

# sglang's dashboard colours and markers, kept so that the two can be read side by side.
STYLES = {
    "sglang": {"color": "#2563eb", "marker": "o", "linestyle": "-"},
    "vllm-omni": {"color": "#dc2626", "marker": "s", "linestyle": "--"},
}
OTHER_STYLES = [
    {"color": "#16a34a", "marker": "^", "linestyle": "-"},
    {"color": "#9333ea", "marker": "D", "linestyle": "-."},
    {"color": "#ea580c", "marker": "v", "linestyle": ":"},
    {"color": "#0891b2", "marker": "P", "linestyle": "-"},
]


def styles_for(frameworks: list[str]) -> dict[str, dict[str, str]]:
    others = cycle(OTHER_STYLES)
    return {fw: STYLES.get(fw) or next(others) for fw in frameworks}


def _segments(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """Runs of consecutive rows with one series key: a config change starts a new one."""
    breaks = (rows["series_key"] != rows["series_key"].shift()).cumsum()
    return [segment for _, segment in rows.groupby(breaks, sort=True)]


def trend_png(case_id: str, history: pd.DataFrame, styles: dict[str, dict[str, str]],
              changes: Sequence[Change] = ()) -> bytes:
    """The trend chart of `trend_figure` as PNG bytes."""
    buffer = io.BytesIO()
    trend_figure(case_id, history, styles, changes).savefig(buffer, format="png")
    return buffer.getvalue()


def trend_figure(case_id: str, history: pd.DataFrame, styles: dict[str, dict[str, str]],
                 changes: Sequence[Change] = ()) -> Figure:
    """Median client latency over time per framework.

    Lines join nightly results of one series only; a config change starts a new segment,
    marked by a dotted rule. The detector's regressions and improvements are triangles at
    their first run after. Manual and API runs are hollow points; failures are crosses on the
    time axis; cancelled runs are not drawn. The y-axis spans the data, so that a 5 % step shows.
    """
    figure = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for framework, style in styles.items():
        rows = history[history["framework"] == framework]
        ok = rows[rows["status"] == "ok"]
        nightly = ok[ok["trigger"] == "schedule"]
        for index, segment in enumerate(_segments(nightly)):
            axes.plot(segment["started_at"], segment["median_s"], color=style["color"], marker=style["marker"],
                      linestyle=style["linestyle"], markersize=4, label=framework if index == 0 else None)
            if index > 0:
                axes.axvline(segment["started_at"].iloc[0], color=style["color"], linestyle=":", linewidth=1)
                axes.annotate("config or method changed", (segment["started_at"].iloc[0], 1.0),
                              xycoords=("data", "axes fraction"), fontsize=7, color=style["color"], rotation=90,
                              va="top", ha="right")
        adhoc = ok[ok["trigger"] != "schedule"]
        if not adhoc.empty:
            axes.plot(adhoc["started_at"], adhoc["median_s"], linestyle="none", marker=style["marker"],
                      markerfacecolor="none", color=style["color"],
                      label=f"{framework} (manual/api)" if nightly.empty else None)
        _mark_changes(axes, nightly, [c for c in changes if c.framework == framework and c.kind != "break"], style)
        # Not a framework without adapter, a case still pending, nor one a stopped run never finished.
        failed = rows[(rows["status"] == "failed") & (rows["error_class"] != "cancelled")]
        if not failed.empty:
            axes.plot(failed["started_at"], [0.0] * len(failed), linestyle="none", marker="x", color=style["color"],
                      markersize=7, transform=axes.get_xaxis_transform(), clip_on=False,
                      label=f"{framework} failed")
    times = history["started_at"]
    if times.nunique() == 1:
        # One run only: its calendar day, not matplotlib's default span of years. A span centred on
        # the run would cross midnight and label the next date; ending a second early keeps that tick off.
        day = times.iloc[0].floor("D")
        axes.set_xlim(day, day + pd.Timedelta(days=1) - pd.Timedelta(seconds=1))
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.set_title(f"{case_id}: median client latency")
    axes.set_ylabel("seconds")
    low, top = history["median_s"].min(), history["median_s"].max()
    if pd.notna(top) and top > 0:
        margin = max(top - low, 0.05 * top) * 0.15
        axes.set_ylim(max(0.0, low - margin), top + margin)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        # Outside the plot: a legend inside can hide points.
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return figure


def _mark_changes(axes: Axes, nightly: pd.DataFrame, changes: list[Change], style: dict[str, str]) -> None:
    for change in changes:
        at = nightly[nightly["run_id"] == change.run_id]
        if not at.empty:
            axes.plot(at["started_at"], at["median_s"], linestyle="none", markersize=11, color=style["color"],
                      marker="^" if change.kind == "regression" else "v", markerfacecolor="none",
                      label=f"{change.kind} ×{change.ratio:.2f}")
