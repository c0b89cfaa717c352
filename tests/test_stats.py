"""Statistics over floats."""

from __future__ import annotations

import statistics

import pytest

from diffbench.stats import median_interval, relative_change, summarize


def test_summary() -> None:
    summary = summarize([3.0, 1.0, 2.0])
    assert (summary.n, summary.median, summary.min, summary.max) == (3, 2.0, 1.0, 3.0)
    assert summary.low is not None and 1.0 <= summary.low <= 2.0 <= summary.high <= 3.0
    assert summarize([]) is None


def test_relative_change_against_the_history_median() -> None:
    assert relative_change(11.0, [10.0, 9.0, 10.0, 100.0, 10.0]) == pytest.approx(0.1)
    assert relative_change(1.0, []) is None


def test_median_interval_is_a_bootstrap_of_the_median_and_repeatable() -> None:
    steady = [1.0 + 0.001 * (i % 5) for i in range(30)]
    noisy = [1.0 + 0.2 * (i % 5) for i in range(30)]
    low, high = median_interval(steady)
    assert low <= statistics.median(steady) <= high and high - low <= 0.004
    noisy_low, noisy_high = median_interval(noisy)
    assert noisy_high - noisy_low > 50 * (high - low)
    assert median_interval(noisy) == (noisy_low, noisy_high)  # the same samples, the same stored interval
    assert median_interval([2.0]) is None
    summary = summarize(steady)
    assert summary.low == low and summary.high == high
    assert summary.half_width == pytest.approx((high - low) / 2 / statistics.median(steady))
    assert summarize([2.0]).half_width is None
