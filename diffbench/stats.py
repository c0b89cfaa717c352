"""Summaries of measured values; pure functions over floats, no I/O."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Median of one metric over the measured requests, with the bootstrap 95 % interval of that median."""

    n: int
    median: float
    min: float
    max: float
    low: float | None = None
    high: float | None = None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width, as a fraction of the median; None with fewer than two values."""
        if self.low is None or self.high is None or not self.median:
            return None
        return (self.high - self.low) / 2 / self.median


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the median; the same values always give the same interval."""
    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=float)
    resampled = np.random.default_rng(0).choice(data, size=(RESAMPLES, len(data)), replace=True)
    medians = np.median(resampled, axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def summarize(values: list[float]) -> Summary | None:
    """The summary of `values`, or None when nothing was measured."""
    if not values:
        return None
    low, high = median_interval(values) or (None, None)
    return Summary(len(values), statistics.median(values), min(values), max(values), low, high)


def relative_change(current: float, history: list[float]) -> float | None:
    """Change of `current` against the median of `history`, as a fraction (0.05 = 5 % slower)."""
    if not history:
        return None
    reference = statistics.median(history)
    return (current - reference) / reference if reference else None


def ratio_interval(after: list[float], before: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of median(after) / median(before), both resampled; seeded as above."""
    rng = np.random.default_rng(0)
    ratios = (np.median(rng.choice(np.asarray(after, dtype=float), size=(RESAMPLES, len(after))), axis=1)
              / np.median(rng.choice(np.asarray(before, dtype=float), size=(RESAMPLES, len(before))), axis=1))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)
