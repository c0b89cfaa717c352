"""What is worth waking someone for: a confirmed regression, or a case failing night after night.

Each alert has a key that names the event it reports (the series and the first run of it), so
it is announced once, not every night it persists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from diffbench.regressions import Change

# Nights in a row a case must fail (cancelled runs aside) before it is announced.
FAILURE_STREAK = 3
# Only what happened this recently is announced: a first run on years of history wakes no one for old news.
RECENT_DAYS = 7


@dataclass(frozen=True)
class Alert:
    """One announcement: its key, what happened and the run that shows it."""

    key: str
    kind: Literal["regression", "failure-streak"]
    case_id: str
    framework: str
    run_id: str
    message: str
    details: dict[str, Any]


def regression_alerts(changes: list[Change], since: str) -> list[Alert]:
    """One alert per confirmed regression first seen on or after `since` (YYYY-MM-DD); improvements
    and breaks are for the dashboard only."""
    return [Alert(
        key=f"regression:{c.case_id}/{c.framework}:{c.run_id}", kind="regression", case_id=c.case_id,
        framework=c.framework, run_id=c.run_id,
        message=(f"{c.case_id}/{c.framework} got slower by {c.ratio - 1:.1%} ({c.before:.3f} s → {c.after:.3f} s, "
                 f"confidence {c.confidence:.2f}) from {c.date}; engine {c.engine_version_before} → "
                 f"{c.engine_version_after}"),
        details=c.as_dict()) for c in changes if c.kind == "regression" and c.date >= since]


def failure_streaks(frame: pd.DataFrame, since: str) -> list[Alert]:
    """(case, framework) pairs whose last `FAILURE_STREAK` nightly results all failed, the last on or after `since`."""
    nightly = frame[(frame["trigger"] == "schedule") & (frame["status"].isin(["ok", "failed"]))
                    & (frame["error_class"].fillna("") != "cancelled")].sort_values("started_at")
    alerts = []
    for (case_id, framework), rows in nightly.groupby(["case_id", "framework"], sort=True):
        last = rows.tail(FAILURE_STREAK)
        recent = len(last) == FAILURE_STREAK and f"{last.iloc[-1]['started_at']:%Y-%m-%d}" >= since
        if recent and (last["status"] == "failed").all():
            # Keyed by the streak's first failure: a longer streak is the same alert.
            ok = rows[rows["status"] == "ok"]
            streak = rows[rows["started_at"] > ok["started_at"].max()] if not ok.empty else rows
            first = streak.iloc[0]
            classes = ", ".join(dict.fromkeys(streak["error_class"].fillna("?")))
            alerts.append(Alert(
                key=f"failure-streak:{case_id}/{framework}:{first['run_id']}", kind="failure-streak",
                case_id=str(case_id), framework=str(framework), run_id=str(last.iloc[-1]["run_id"]),
                message=(f"{case_id}/{framework} failed {len(streak)} nights running since "
                         f"{first['started_at']:%Y-%m-%d} ({classes})"),
                details={"nights": len(streak), "since": f"{first['started_at']:%Y-%m-%d}", "error_classes": classes}))
    return alerts
