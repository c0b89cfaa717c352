"""Selecting what a dashboard compares: this run's results and their comparable history."""

from __future__ import annotations

import pandas as pd

from diffbench.stats import relative_change

HISTORY_NIGHTS = 5


def pick_run(frame: pd.DataFrame, run_id: str | None) -> str:
    """`run_id`, or the latest run that has results and is not a pull request's."""
    if run_id is not None:
        if run_id not in set(frame["run_id"]):
            raise LookupError(f"no results for run {run_id!r}")
        return run_id
    runs = frame[frame["trigger"] != "pr"]
    if runs.empty:
        raise LookupError("the database holds no results yet")
    return str(runs.sort_values("started_at")["run_id"].iloc[-1])


def comparable_history(frame: pd.DataFrame, row: pd.Series) -> list[float]:
    """Medians of the last nightly results of the same series before `row`'s run.

    Results the night's canary doubts are left out, as the change detector leaves them out.
    """
    earlier = frame[
        (frame["case_id"] == row["case_id"]) & (frame["series_key"] == row["series_key"])
        & (frame["trigger"] == "schedule") & (frame["status"] == "ok") & frame["suspect"].isna()
        & (frame["started_at"] < row["started_at"])
    ]
    return earlier["median_s"].tail(HISTORY_NIGHTS).tolist()


def packages_before(frame: pd.DataFrame, run: pd.DataFrame) -> list[str | None]:
    """Per row of `run`, its series' engine package hash before it, where the engine's environment changed since."""
    known = frame[frame["engine_packages"].notna()].sort_values("started_at")
    changed: list[str | None] = []
    for _, row in run.iterrows():
        earlier = known[(known["series_key"] == row["series_key"]) & (known["started_at"] < row["started_at"])]
        before = earlier["engine_packages"].iloc[-1] if not earlier.empty else None
        changed.append(before if before is not None and pd.notna(row["engine_packages"])
                       and before != row["engine_packages"] else None)
    return changed


def change(frame: pd.DataFrame, row: pd.Series) -> float | None:
    """Relative change against the median of comparable history."""
    return relative_change(row["median_s"], comparable_history(frame, row))


def baseline_of(run: pd.DataFrame) -> str:
    """The run's baseline framework: as configured, else sglang, else the first in order."""
    configured = run["baseline"].dropna()
    frameworks = list(dict.fromkeys(run["framework"]))
    if not configured.empty and configured.iloc[0] in frameworks:
        return str(configured.iloc[0])
    return "sglang" if "sglang" in frameworks else frameworks[0]
