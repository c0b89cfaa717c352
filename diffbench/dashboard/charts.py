"""Trend, cold-start and throughput charts as PNG bytes, drawn on matplotlib Figures without pyplot's global state."""

from __future__ import annotations

import io
from collections.abc import Sequence
from itertools import cycle
from typing import Any

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
# The cold-start chart's panels: a frame column each, with its title.
COLD_START = {"download_s": "download", "ready_s": "launch to ready", "first_request_latency_s": "first request"}


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
    return png(trend_figure(case_id, history, styles, changes))


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _time_axis(axes: Axes, times: pd.Series, narrow: bool = False) -> None:
    """Concise dates; one run alone reads as its calendar day, not matplotlib's default span of years."""
    if times.nunique() == 1:
        # A span centred on the run would cross midnight and label the next date; ending a second
        # early keeps that tick off.
        day = times.iloc[0].floor("D")
        axes.set_xlim(day, day + pd.Timedelta(days=1) - pd.Timedelta(seconds=1))
    # A narrow panel takes whole days sooner than hours: more labels would overlap.
    locator = AutoDateLocator(minticks=2, maxticks=5) if narrow else AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def trend_figure(case_id: str, history: pd.DataFrame, styles: dict[str, dict[str, str]],
                 changes: Sequence[Change] = ()) -> Figure:
    """Median client latency over time per framework, with its 95 % interval as error bars.

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
        spread = ok[ok["ci_low_s"].notna() & ok["ci_high_s"].notna()]
        if not spread.empty:
            # Clipped at zero: matplotlib refuses negative lengths, and a median on its bound has none.
            below = (spread["median_s"] - spread["ci_low_s"]).clip(lower=0)
            above = (spread["ci_high_s"] - spread["median_s"]).clip(lower=0)
            axes.errorbar(spread["started_at"], spread["median_s"], yerr=[below, above], fmt="none",
                          ecolor=style["color"], elinewidth=1, capsize=2, alpha=0.7)
        _mark_changes(axes, nightly, [c for c in changes if c.framework == framework and c.kind != "break"], style)
        # Not a case kept as not run, one still pending, nor one a stopped run never finished.
        failed = rows[(rows["status"] == "failed") & (rows["error_class"] != "cancelled")]
        if not failed.empty:
            axes.plot(failed["started_at"], [0.0] * len(failed), linestyle="none", marker="x", color=style["color"],
                      markersize=7, transform=axes.get_xaxis_transform(), clip_on=False,
                      label=f"{framework} failed")
    _time_axis(axes, history["started_at"])
    axes.set_title(f"{case_id}: median client latency")
    axes.set_ylabel("seconds")
    # From the medians only: one wide interval would squeeze the others' step flat.
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


def cold_start_figure(case_id: str, history: pd.DataFrame, styles: dict[str, dict[str, str]]) -> Figure:
    """Download, launch-to-ready and first-request seconds over time per framework, a panel each."""
    figure = Figure(figsize=(12, 3.2), dpi=100, layout="constrained")
    panels = figure.subplots(1, len(COLD_START), sharex=True)
    for axes, (column, title) in zip(panels, COLD_START.items(), strict=True):
        for framework, style in styles.items():
            rows = history[(history["framework"] == framework) & history[column].notna()]
            if not rows.empty:
                axes.plot(rows["started_at"], rows[column], color=style["color"], marker=style["marker"],
                          linestyle=style["linestyle"], markersize=4, label=framework)
        _time_axis(axes, history["started_at"], narrow=True)
        axes.set_title(title)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("seconds")
    figure.suptitle(f"{case_id}: cold start")
    _figure_legend(figure, panels)
    return figure


def throughput_figure(case_id: str, levels: dict[str, list[dict[str, Any]]],
                      styles: dict[str, dict[str, str]]) -> Figure:
    """Requests per second and median latency against concurrency per framework, a panel each."""
    figure = Figure(figsize=(10, 3.2), dpi=100, layout="constrained")
    rate, latency = panels = figure.subplots(1, 2, sharex=True)
    for framework, style in styles.items():
        points = levels[framework]
        concurrency = [p["concurrency"] for p in points]
        line = {"color": style["color"], "marker": style["marker"], "linestyle": style["linestyle"], "markersize": 4}
        rate.plot(concurrency, [p["requests_per_s"] for p in points], label=framework, **line)
        # A level whose requests all failed has no latency: a gap, not a point at zero.
        latency.plot(concurrency, [p["p50_s"] if p["p50_s"] is not None else float("nan") for p in points], **line)
    ticks = sorted({p["concurrency"] for points in levels.values() for p in points})
    for axes, title, unit in ((rate, "throughput", "requests / s"), (latency, "median latency", "seconds")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(ticks, [str(t) for t in ticks])
        axes.minorticks_off()
        axes.set_xlabel("concurrent requests")
        axes.set_ylabel(unit)
        axes.set_title(title)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    figure.suptitle(f"{case_id}: throughput")
    _figure_legend(figure, panels)
    return figure


def _figure_legend(figure: Figure, panels: Sequence[Axes]) -> None:
    """One legend for all panels, right of them, with each framework once."""
    labelled = {label: handle for axes in panels
                for handle, label in zip(*axes.get_legend_handles_labels(), strict=True)}
    if labelled:
        figure.legend(labelled.values(), labelled.keys(), fontsize=8, loc="outside right upper")
