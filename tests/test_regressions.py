"""The change detector: on made-up series with known answers, and on sglang's labelled history."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from diffbench.alerts import failure_streaks, regression_alerts
from diffbench.cli import main
from diffbench.demo import history_files
from diffbench.regressions import Point, detect

from conftest import FIXTURES

HISTORY = FIXTURES / "sglang" / "history"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def series(levels: list[float], key: str | list[str] = "k", noise: float = 0.01, seed: int = 1) -> list[Point]:
    """One point a night, three samples around each level, engine build `v<night>`."""
    rng = random.Random(seed)
    keys = key if isinstance(key, list) else [key] * len(levels)
    return [Point(f"run{night}", T0 + timedelta(days=night), keys[night],
                  tuple(level * rng.gauss(1, noise) for _ in range(3)), f"v{night}")
            for night, level in enumerate(levels)]


def test_a_step_that_stays_is_one_regression_dated_by_its_first_night_with_the_builds_to_bisect() -> None:
    # The user's trial: 60 nights, sglang 18 % slower from night 56.
    [change] = detect("flux", "sglang", series([1.0] * 56 + [1.18] * 4))
    assert (change.kind, change.run_id, change.date) == ("regression", "run56", "2026-02-26")
    assert change.ratio == pytest.approx(1.18, rel=0.02) and change.confidence > 0.99
    assert (change.engine_version_before, change.engine_version_after) == ("v55", "v56")
    assert change.runs_to_detect == 2
    # Nights 57-59 are not a new baseline hiding it: they are the new level, reported once.
    assert detect("flux", "sglang", series([1.0] * 56 + [1.18] * 2))[0].run_id == "run56"
    assert detect("flux", "sglang", series([1.0] * 56 + [1.18])) == []  # one night is not yet a change


def test_spikes_and_a_bimodal_case_are_noise() -> None:
    spikes = [1.0] * 40
    for night in (10, 21, 30):
        spikes[night] = 1.4
    assert detect("flux", "sglang", series(spikes)) == []
    flipping = [1.0 if (night // 3) % 2 == 0 else 1.1 for night in range(60)]  # two levels, by server launch
    assert detect("qwen", "sglang", series(flipping)) == []


def test_a_level_that_moves_on_after_two_nights_is_a_second_change() -> None:
    changes = detect("ltx", "sglang", series([60.0] * 10 + [40.0] * 2 + [19.0] * 6))
    assert [(c.kind, c.run_id, round(c.ratio, 2)) for c in changes] == [
        ("improvement", "run10", 0.67), ("improvement", "run12", 0.47)]


def test_an_improvement_and_a_regression_after_it_are_each_found() -> None:
    changes = detect("flux", "sglang", series([2.0] * 20 + [1.5] * 20 + [1.65] * 10))
    assert [(c.kind, c.run_id) for c in changes] == [("improvement", "run20"), ("regression", "run40")]
    assert changes[1].before == pytest.approx(1.5, rel=0.02)  # against the new level, not the old one


def test_a_config_change_is_a_break_never_compared_across() -> None:
    keys = ["old"] * 20 + ["new"] * 20
    [change] = detect("flux", "sglang", series([1.0] * 20 + [2.0] * 20, key=keys))
    assert (change.kind, change.run_id) == ("break", "run20") and change.ratio == pytest.approx(2.0, rel=0.03)


def labels() -> list[dict[str, str]]:
    with (HISTORY / "labels.csv").open() as file:
        return list(csv.DictReader(file))


def test_sglang_history_its_shifts_found_and_few_flags_on_noise(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    assert main(["import-sglang", *map(str, history_files()), "--database-url", url]) == 0
    capsys.readouterr()
    assert main(["regressions", "--json", "--database-url", url]) == 0
    changes = json.loads(capsys.readouterr().out)
    assert {"case_id", "framework", "metric", "date", "run_id", "kind", "ratio", "before", "after", "confidence",
            "engine_version_before", "engine_version_after"} <= set(changes[0])

    def near(change: dict, label: dict) -> bool:
        days = abs((date.fromisoformat(change["date"]) - date.fromisoformat(label["date"])).days)
        return change["case_id"] == label["case_id"] and days <= 3 and (change["ratio"] > 1) == (
            float(label["ratio"]) > 1)

    shifts = [label for label in labels() if abs(float(label["ratio"]) - 1) >= 0.05]
    found = [label for label in shifts if any(near(c, label) for c in changes)]
    noise = [c for c in changes if not any(near(c, label) for label in labels())]
    # Every labelled shift >= 5 %, LTX-2.3's of 06-19 inside noise almost as wide as itself included.
    assert len(found) == len(shifts) == 17 and len(noise) <= 4, (found, noise)  # the 5 % rule: 51 on noise

    assert main(["regressions", "--case", "flux1_dev_t2i_1024", "--since", "2026-06-01", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "flux1_dev_t2i_1024/sglang" in out and "2026-05-23" not in out and "2026-06-2" in out


def test_a_failure_streak_is_one_alert_keyed_by_its_first_night_and_old_news_is_not_announced() -> None:
    def frame(statuses: list[str]) -> pd.DataFrame:
        return pd.DataFrame([{"case_id": "wan", "framework": "sglang", "trigger": "schedule", "status": status,
                              "error_class": None if status == "ok" else "oom", "run_id": f"run{night}",
                              "started_at": pd.Timestamp(T0) + pd.Timedelta(days=night)}
                             for night, status in enumerate(statuses)])

    assert failure_streaks(frame(["ok", "failed", "failed"]), "2026-01-01") == []
    [streak] = failure_streaks(frame(["ok", "failed", "failed", "failed"]), "2026-01-01")
    [longer] = failure_streaks(frame(["ok", "failed", "failed", "failed", "failed"]), "2026-01-01")
    assert streak.key == longer.key == "failure-streak:wan/sglang:run1"  # one streak, one alert
    assert "failed 4 nights running since 2026-01-02 (oom)" in longer.message
    assert failure_streaks(frame(["ok", "failed", "failed", "failed"]), "2026-02-01") == []
    changes = detect("flux", "sglang", series([1.0] * 20 + [1.3] * 3))
    assert [a.key for a in regression_alerts(changes, "2026-01-01")] == ["regression:flux/sglang:run20"]
    assert regression_alerts(changes, "2026-02-01") == []
