"""Statistics over floats."""

from __future__ import annotations

import pytest

from diffbench.stats import Summary, relative_change, summarize


def test_summary() -> None:
    assert summarize([3.0, 1.0, 2.0]) == Summary(3, 2.0, 1.0, 3.0)
    assert summarize([]) is None


def test_relative_change_against_the_history_median() -> None:
    assert relative_change(11.0, [10.0, 9.0, 10.0, 100.0, 10.0]) == pytest.approx(0.1)
    assert relative_change(1.0, []) is None
