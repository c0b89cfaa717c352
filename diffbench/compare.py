"""One run against another, per (case, framework): both medians, their ratio, and a verdict.

The verdict uses the detector's statistics (`regressions`): a Mann-Whitney rank test over every
sample of both sides, with the detector's confidence, and its smallest step. `slower` needs all
three: the ratio of medians at least 1 + MIN_STEP, the ratio's bootstrap interval above 1, and the
rank test confident that the samples moved up. `faster` is the mirror image; anything else is
`no change`. A result with nothing to compare says why instead.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Literal

from diffbench.regressions import MIN_CONFIDENCE, MIN_STEP, rank_confidence
from diffbench.stats import ratio_interval

# `compare_to` of a run: per series, the latest nightly before it; or a run id; or NO_COMPARISON.
LATEST_NIGHTLY = "latest-nightly"
NO_COMPARISON = "none"

Verdict = Literal["slower", "faster", "no change", "no baseline", "failed", "baseline failed"]


@dataclass(frozen=True)
class Measured:
    """One stored result as a comparison needs it."""

    run_id: str
    case_id: str
    framework: str
    status: str
    series_key: str
    engine_version: str | None
    samples: tuple[float, ...]


@dataclass(frozen=True)
class Comparison:
    """One (case, framework) of a run against its baseline; medians in seconds, ratio = run / baseline."""

    case_id: str
    framework: str
    verdict: Verdict
    run_id: str
    baseline_run_id: str | None = None
    median_s: float | None = None
    baseline_median_s: float | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    confidence: float | None = None
    engine_version: str | None = None
    baseline_engine_version: str | None = None
    same_series: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(ratio: float, low: float, high: float, slower_confidence: float, faster_confidence: float) -> Verdict:
    if ratio >= 1 + MIN_STEP and low > 1 and slower_confidence >= MIN_CONFIDENCE:
        return "slower"
    if ratio <= 1 - MIN_STEP and high < 1 and faster_confidence >= MIN_CONFIDENCE:
        return "faster"
    return "no change"


def compare(run: Measured, baseline: Measured | None) -> Comparison:
    """`run` against `baseline` (None: nothing to compare with)."""
    head = {"case_id": run.case_id, "framework": run.framework, "run_id": run.run_id,
            "engine_version": run.engine_version}
    if run.status != "ok" or not run.samples:
        return Comparison(verdict="failed", **head)
    if baseline is None:
        return Comparison(verdict="no baseline", **head)
    head |= {"baseline_run_id": baseline.run_id, "baseline_engine_version": baseline.engine_version,
             "same_series": baseline.series_key == run.series_key}
    if baseline.status != "ok" or not baseline.samples:
        return Comparison(verdict="baseline failed", **head)
    median, base = statistics.median(run.samples), statistics.median(baseline.samples)
    low, high = ratio_interval(list(run.samples), list(baseline.samples))
    slower = rank_confidence(baseline.samples, run.samples, slower=True)
    faster = rank_confidence(baseline.samples, run.samples, slower=False)
    return Comparison(verdict=verdict(median / base, low, high, slower, faster), median_s=median,
                      baseline_median_s=base, ratio=median / base, ratio_low=low, ratio_high=high,
                      confidence=slower if median >= base else faster, **head)


def against_nightlies(run: list[Measured], nightlies: dict[str, Measured]) -> list[Comparison]:
    """Each result of `run` against the latest nightly of its series (`store.latest_nightlies`)."""
    return [compare(measured, nightlies.get(measured.series_key)) for measured in run]


def against_run(run: list[Measured], baseline: list[Measured]) -> list[Comparison]:
    """Each result of `run` against the same (case, framework) of the run named as its baseline."""
    by_pair = {(m.case_id, m.framework): m for m in baseline}
    return [compare(measured, by_pair.get((measured.case_id, measured.framework))) for measured in run]


def markdown(comparisons: list[Comparison]) -> str:
    """The comparison as a markdown table, slowest first, for a job summary, a PR comment or an artifact."""
    order = {"slower": 0, "failed": 1, "baseline failed": 2, "faster": 3, "no change": 4, "no baseline": 5}
    rows = sorted(comparisons, key=lambda c: (order[c.verdict], -(c.ratio or 0), c.case_id, c.framework))
    lines = ["| case | framework | verdict | median | baseline | ratio [95 % interval] | confidence | builds |",
             "|---|---|---|---|---|---|---|---|"]
    for c in rows:
        if c.ratio is None:
            figures = "| — | — | — | — |"
        else:
            figures = (f"| {c.median_s:.3f} s | {c.baseline_median_s:.3f} s | ×{c.ratio:.3f} "
                       f"[{c.ratio_low:.3f}, {c.ratio_high:.3f}] | {c.confidence:.2f} |")
        builds = f"{c.baseline_engine_version or '?'} → {c.engine_version or '?'}" if c.baseline_run_id else "—"
        mark = {"slower": "🔴 ", "faster": "🟢 "}.get(c.verdict, "")
        config = "" if c.same_series in (None, True) else " (other config)"
        lines.append(f"| {c.case_id} | {c.framework} | {mark}{c.verdict}{config} {figures} {builds} |")
    slower = sum(c.verdict == "slower" for c in comparisons)
    lines.append("")
    lines.append(f"{slower} slower, {sum(c.verdict == 'faster' for c in comparisons)} faster, "
                 f"{sum(c.verdict == 'no change' for c in comparisons)} unchanged of {len(comparisons)}; "
                 f"slower means ≥ {MIN_STEP:.0%} with its interval above 1 and rank-test confidence "
                 f"≥ {MIN_CONFIDENCE:.2f}.")
    return "\n".join(lines)
