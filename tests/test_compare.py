"""A run against a baseline: verdicts from samples, baselines found in storage, and `diffbench compare`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffbench import cli
from diffbench.compare import Measured, against_nightlies, against_run, compare, markdown
from diffbench.storage import store

from factories import make_result, make_run


def samples(level: float, seed: int, n: int = 20, noise: float = 0.02) -> tuple[float, ...]:
    return tuple(level * (1 + noise * np.random.default_rng(seed).standard_normal(n)))


def measured(level: float, seed: int, run_id: str = "pr", **fields: object) -> Measured:
    base = {"run_id": run_id, "case_id": "flux", "framework": "sglang", "status": "ok", "series_key": "s1",
            "engine_version": "0.5.23", "samples": samples(level, seed)}
    return Measured(**(base | fields))


@pytest.mark.parametrize(("level", "expected"), [(1.10, "slower"), (0.90, "faster"), (1.0, "no change"),
                                                 (1.03, "no change")],
                         ids=["10%-slower", "10%-faster", "same-build", "3%-below-the-step"])
def test_verdict_from_every_sample(level: float, expected: str) -> None:
    result = compare(measured(level, seed=1), measured(1.0, seed=2, run_id="nightly"))
    assert result.verdict == expected
    assert result.ratio == pytest.approx(level, rel=0.02)
    assert result.ratio_low < result.ratio < result.ratio_high
    if expected in ("slower", "faster"):
        assert result.confidence > 0.99 and not result.ratio_low < 1 < result.ratio_high


def test_a_slowdown_hidden_in_noise_is_not_called_slower() -> None:
    """10 % apart in medians, but the noise is ±30 %: the interval of the ratio crosses 1."""
    result = compare(measured(1.10, seed=3, samples=samples(1.10, 3, n=6, noise=0.3)),
                     measured(1.0, seed=4, samples=samples(1.0, 4, n=6, noise=0.3)))
    assert result.verdict == "no change" and result.ratio_low < 1 < result.ratio_high


def test_nothing_to_compare_says_why() -> None:
    assert compare(measured(1.0, 1), None).verdict == "no baseline"
    assert compare(measured(1.0, 1, status="failed", samples=()), measured(1.0, 2)).verdict == "failed"
    assert compare(measured(1.0, 1), measured(1.0, 2, status="failed", samples=())).verdict == "baseline failed"


def test_baselines_by_series_or_by_case_and_the_markdown_names_the_builds() -> None:
    run = [measured(1.2, 1, engine_version="pr-build"), measured(1.0, 2, case_id="wan", series_key="s2")]
    nightly = measured(1.0, 3, run_id="n1", engine_version="0.5.23")
    by_series = against_nightlies(run, {"s1": nightly})
    assert [(c.case_id, c.verdict) for c in by_series] == [("flux", "slower"), ("wan", "no baseline")]
    other_config = measured(1.0, 4, run_id="r0", case_id="wan", series_key="s9")
    by_case = against_run(run, [nightly, other_config])
    assert [(c.verdict, c.same_series) for c in by_case] == [("slower", True), ("no change", False)]
    table = markdown(by_case)
    assert "| flux | sglang | 🔴 slower |" in table and "0.5.23 → pr-build" in table
    assert "no change (other config)" in table and table.index("flux") < table.index("wan")
    assert "1 slower, 0 faster, 1 unchanged of 2" in table


def test_compare_command_against_the_latest_nightly_or_a_named_run(database, capsys: pytest.CaptureFixture) -> None:
    engine = database
    url = str(engine.url.render_as_string(hide_password=False))
    history = {"n0": (0, "schedule", 1.0), "n1": (1, "schedule", 1.0), "m1": (2, "manual", 2.0),
               "pr": (3, "manual", 1.15), "n2": (4, "schedule", 1.0)}
    for run_id, (day, trigger, level) in history.items():
        store.save_run(engine, make_run(run_id, day=day, trigger=trigger))
        store.save_results(engine, run_id, [
            make_result(latencies=samples(level, day), engine_version=f"build-{run_id}"),
            make_result(case_id="wan", latencies=samples(level, day + 10), config_hash=f"{run_id:x<16}")])
    assert cli.main(["compare", "pr", "--json", "--database-url", url]) == 0
    flux, wan = json.loads(capsys.readouterr().out)
    # The latest nightly before the run, not a manual run nor a later nightly; wan's config is new.
    assert (flux["verdict"], flux["baseline_run_id"], flux["baseline_engine_version"]) == ("slower", "n1", "build-n1")
    assert wan["verdict"] == "no baseline"
    assert cli.main(["compare", "pr", "--against", "m1", "--markdown", "--database-url", url]) == 0
    table = capsys.readouterr().out
    assert "🟢 faster" in table and "| wan | sglang | 🟢 faster (other config) |" in table
    assert cli.main(["compare", "nope", "--database-url", url]) == 1
    assert "error [unknown_run]: no run 'nope' is stored in" in capsys.readouterr().err
