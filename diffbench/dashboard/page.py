"""The dashboard page: a run header, one table row per case, the run's details, and the charts."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from diffbench.dashboard.charts import COLD_START, cold_start_figure, png, styles_for, throughput_figure, trend_png
from diffbench.dashboard.details import across_engines, details, present, throughput_table, throughputs
from diffbench.dashboard.history import HISTORY_NIGHTS, baseline_of, change, packages_before, pick_run
from diffbench.regressions import Change
from diffbench.results import UNFINISHED

# How far back the Changes section looks from the run's date.
CHANGE_DAYS = 14
# Above it: the header, the changes and the table, all a summary needs (without the charts).
TRENDS_HEADING = "## Trends"


@dataclass(frozen=True)
class Dashboard:
    """Markdown that links `<name>.png` for each chart, and those PNGs by name."""

    markdown: str
    charts: dict[str, bytes]
    run_id: str

    def write(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        for name, chart in self.charts.items():
            (out / f"{name}.png").write_bytes(chart)
        index = out / "index.md"
        index.write_text(self.markdown)
        return index

    def inline_markdown(self) -> str:
        """The same page with the charts embedded as data URIs (for a Prefect artifact)."""
        text = self.markdown
        for name, chart in self.charts.items():
            text = text.replace(f"]({name}.png)", f"](data:image/png;base64,{base64.b64encode(chart).decode()})")
        return text


def _builds(run: pd.DataFrame) -> list[str]:
    """Where each framework's engine came from, when the config or the run said."""
    builds = run[run["engine_build"].notna()].drop_duplicates("framework")
    if builds.empty:
        return []
    return ["Builds: " + " · ".join(f"{r['framework']} `{r['engine_build']}`" for _, r in builds.iterrows()), ""]


def _header(run: pd.DataFrame) -> list[str]:
    first = run.iloc[0]
    trigger = first["trigger"]
    note = "" if trigger == "schedule" else f" — a {trigger} run, not part of the nightly history"
    if pd.notna(first["pull_request"]):
        note = f" — pull request #{int(first['pull_request'])}, judged against the nightly, kept out of its history"
    versions = ", ".join(f"{fw} {v}" for fw, v in sorted((first["engine_versions"] or {}).items())) or "unknown"
    # A run without a label reads back from the frame as NaN, which is truthy.
    label = f" `{first['label']}`" if pd.notna(first["label"]) and first["label"] else ""
    return [
        "# Diffusion serving comparison",
        "",
        f"**{first['started_at']:%Y-%m-%d %H:%M} UTC** · trigger **{trigger}**{label}{note}",
        "",
        f"Run `{first['run_id']}` · host {first['host']} · GPU {first['gpu_model']} (driver {first['driver']}) · "
        f"diffbench {first['diffbench_version']} · engines: {versions}",
        "",
        *_builds(run),
        *_incomplete(run),
    ]


def _incomplete(run: pd.DataFrame) -> list[str]:
    """A warning above the table of a run that did not end: cancelled, crashed, or still going."""
    status = run.iloc[0]["run_status"]
    if status in ("ok", "failed"):
        return []
    measured = run[run["status"] != "not_run"]
    done = int((measured["status"] == "ok").sum())
    what = "is still running" if status == "running" else f"was **{status}** before it finished"
    return [f"> ⚠ **Incomplete run**: it {what}; {done} of {len(measured)} case(s) measured.", ""]


def _changes(run: pd.DataFrame, changes: Sequence[Change]) -> list[str]:
    """The changes of this run's cases over the `CHANGE_DAYS` up to it, newest first."""
    day = run.iloc[0]["started_at"]
    since, until = f"{day - pd.Timedelta(days=CHANGE_DAYS):%Y-%m-%d}", f"{day:%Y-%m-%d}"
    cases = set(run["case_id"])
    recent = [c for c in changes if c.case_id in cases and since <= c.date <= until]
    lines = ["## Changes", ""]
    if not recent:
        return [*lines, f"No level change in the last {CHANGE_DAYS} days.", ""]
    lines += ["| first run after | case | framework | change | level | confidence | engine builds (good → first) |",
              "|---|---|---|---|---|---|---|"]
    for c in sorted(recent, key=lambda c: c.date, reverse=True):
        what = "**regression** ⚠" if c.kind == "regression" else c.kind
        lines.append(f"| {c.date} | {c.case_id} | {c.framework} | {what} ×{c.ratio:.3f} | {c.before:.3f} s → "
                     f"{c.after:.3f} s | {c.confidence:.2f} | {c.engine_version_before} → {c.engine_version_after} |")
    return [*lines, ""]


def _regressed(changes: Sequence[Change], row: pd.Series) -> bool:
    """Whether the detector's latest change of this series, as of this run, is a regression."""
    day = f"{row['started_at']:%Y-%m-%d}"
    known = [c for c in changes if c.case_id == row["case_id"] and c.framework == row["framework"] and c.date <= day]
    return bool(known) and known[-1].kind == "regression"


def _cell(frame: pd.DataFrame, row: pd.Series | None, changes: Sequence[Change]) -> str:
    if row is None:
        return "—"
    if row["status"] == "not_run":
        return "not run (no adapter)" if row["error_class"] == "no_adapter" else "not run (unsupported)"
    if row["status"] != "ok":
        return f"*{row['status']}*" if row["status"] in UNFINISHED else f"**{row['error_class']}**"
    text = f"{row['median_s']:.3f} s"
    if pd.notna(row["ci_low_s"]) and pd.notna(row["ci_high_s"]):
        text += f" [{row['ci_low_s']:.3f}–{row['ci_high_s']:.3f}]"
    if (delta := change(frame, row)) is not None:
        text += f" ({delta:+.1%}, noisy)" if _noisy(row, delta) else f" ({delta:+.1%})"
    text += " ⚠" if _regressed(changes, row) else ""
    return text + (" ⚠ suspect" if present(row["suspect"]) else "")


def _noisy(row: pd.Series, delta: float) -> bool:
    """Whether the median's own interval is wider than its change: too noisy to judge that change."""
    if not (present(row["ci_low_s"]) and present(row["ci_high_s"]) and row["median_s"]):
        return False
    return bool((row["ci_high_s"] - row["ci_low_s"]) / 2 / row["median_s"] > abs(delta))


def _ratio(row: pd.Series | None, base: pd.Series | None) -> str:
    if row is None or base is None or row["status"] != "ok" or base["status"] != "ok" or not base["median_s"]:
        return "—"
    return f"{row['median_s'] / base['median_s']:.2f}×"


def build(frame: pd.DataFrame, run_id: str | None = None, changes: Sequence[Change] = ()) -> Dashboard:
    """The dashboard of one run (default: the latest) against the history in `frame` and its `changes`."""
    run_id = pick_run(frame, run_id)
    # Pull requests' runs stay out of every history; a pull request's own page shows it against the rest.
    frame = frame[(frame["trigger"] != "pr") | (frame["run_id"] == run_id)]
    run = frame[frame["run_id"] == run_id]
    run = run.assign(packages_before=packages_before(frame, run))
    baseline = baseline_of(run)
    frameworks = [baseline] + [fw for fw in dict.fromkeys(run["framework"]) if fw != baseline]
    lines = _header(run) + _changes(run, changes)
    ratio_columns = [f"{fw} / {baseline}" for fw in frameworks[1:]]
    lines.append("| case | " + " | ".join(frameworks + ratio_columns) + " |")
    lines.append("|---" * (1 + len(frameworks) + len(ratio_columns)) + "|")
    cases = list(dict.fromkeys(run["case_id"]))
    for case_id in cases:
        rows = {r["framework"]: r for _, r in run[run["case_id"] == case_id].iterrows()}
        cells = [_cell(frame, rows.get(fw), changes) for fw in frameworks]
        ratios = [_ratio(rows.get(fw), rows.get(baseline)) for fw in frameworks[1:]]
        lines.append(f"| {case_id} | " + " | ".join(cells + ratios) + " |")
    lines += [
        "",
        "Median client latency (submit until the output's last byte) of the measured requests, with the bootstrap "
        "95 % interval of that median in square brackets; in parentheses, the change against the median of the "
        f"last {HISTORY_NIGHTS} comparable nightly results (same case config, engine, hardware and methodology), "
        "marked noisy where the interval's half-width is wider than that change, which is then too noisy to judge; "
        "⚠ marks a series whose latest confirmed change is a regression (see Changes), and ⚠ suspect a result on a "
        "GPU the night's hardware canary doubts (left out of the history). A failure shows its error class; a "
        "framework diffbench has no adapter for, or a case its engine cannot serve (`plan` says why), shows as "
        "not run.",
        "",
        *details(run, frameworks),
        *across_engines(run, frameworks),
    ]
    styles = styles_for(list(dict.fromkeys(frame[frame["case_id"].isin(cases)]["framework"])))
    charts = {}
    lines += [TRENDS_HEADING, ""]
    for case_id in cases:
        history = frame[frame["case_id"] == case_id]
        case_styles = {fw: styles[fw] for fw in dict.fromkeys(history["framework"])}
        charts[case_id] = trend_png(case_id, history, case_styles, [c for c in changes if c.case_id == case_id])
        lines += [f"### {case_id}", "", f"![{case_id}]({case_id}.png)", ""]
        if history[list(COLD_START)].notna().any(axis=None):
            charts[f"{case_id}-cold-start"] = png(cold_start_figure(case_id, history, case_styles))
            lines += [f"![{case_id} cold start]({case_id}-cold-start.png)", ""]
        if levels := throughputs(run[run["case_id"] == case_id], frameworks):
            charts[f"{case_id}-throughput"] = png(throughput_figure(case_id, levels, {fw: styles[fw] for fw in levels}))
            lines += [f"![{case_id} throughput]({case_id}-throughput.png)", "", *throughput_table(levels), ""]
    return Dashboard("\n".join(lines), charts, run_id)
