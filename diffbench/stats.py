"""Summaries of measured values; pure functions over floats, no I/O."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Median and spread of one metric over the measured requests."""

    n: int
    median: float
    min: float
    max: float


def summarize(values: list[float]) -> Summary | None:
    """The summary of `values`, or None when nothing was measured."""
    if not values:
        return None
    return Summary(len(values), statistics.median(values), min(values), max(values))


def relative_change(current: float, history: list[float]) -> float | None:
    """Change of `current` against the median of `history`, as a fraction (0.05 = 5 % slower)."""
    if not history:
        return None
    reference = statistics.median(history)
    return (current - reference) / reference if reference else None
