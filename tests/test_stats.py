"""Statistics over floats."""

from __future__ import annotations

import pytest

from diffbench.stats import Summary, is_regression, relative_change, summarize


def test_summary() -> None:
    assert summarize([3.0, 1.0, 2.0]) == Summary(3, 2.0, 1.0, 3.0)
    assert summarize([]) is None
    assert Summary(3, 2.0, 1.0, 3.0).spread == 0.5


def test_relative_change_against_the_history_median() -> None:
    assert relative_change(11.0, [10.0, 9.0, 10.0, 100.0, 10.0]) == pytest.approx(0.1)
    assert relative_change(1.0, []) is None


def test_regression_needs_more_than_noise() -> None:
    history = [10.0, 10.1, 9.9, 10.0, 10.05]
    assert is_regression(Summary(3, 11.0, 10.9, 11.1), history)
    assert not is_regression(Summary(3, 10.3, 10.2, 10.4), history)  # under 5 %
    assert not is_regression(Summary(3, 11.0, 9.0, 13.0), history)  # the run itself is too noisy
    assert not is_regression(Summary(3, 11.0, 10.0, 11.2), history)  # overlaps the history's range
    assert not is_regression(Summary(3, 11.0, 10.9, 11.1), [])
