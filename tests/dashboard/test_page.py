"""The dashboard table: spread, ratios, change against comparable nightly history, failures."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from diffbench import dashboard, trigger
from diffbench.dashboard.page import TRENDS_HEADING
from diffbench.regressions import scan
from diffbench.storage import store

from factories import make_result, make_run


def night(database, day: int, results: list, trigger: str = "schedule", **run: object) -> str:
    run_id = f"run{day}"
    store.save_run(database, make_run(run_id, day=day, trigger=trigger, **run))
    for result in results:
        store.save_result(database, run_id, result)
    store.finish_run(database, run_id, "ok", make_run(day=day).started_at, {"sglang": "0.5.4"})
    return run_id


def table_row(markdown: str, case_id: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {case_id} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture
def history(database) -> object:
    for day in range(5):
        night(database, day, [make_result("flux", "sglang", (1.0, 1.01, 0.99)),
                              make_result("flux", "vllm-omni", (2.0, 2.02, 1.98))])
    return database


def test_row_has_spread_ratio_and_change(history) -> None:
    night(history, 5, [make_result("flux", "sglang", (1.2, 1.21, 1.19)),
                       make_result("flux", "vllm-omni", (2.0, 2.02, 1.98)),
                       make_result("wan", "sglang", error_class="oom"),
                       make_result("wan", "vllm-omni", (30.0,))], baseline="sglang")
    page = dashboard.build(store.results_frame(history))
    assert page.run_id == "run5"
    assert "| case | sglang | vllm-omni | vllm-omni / sglang |" in page.markdown
    # One slow night is not yet a change: the detector waits for a second one before the ⚠.
    assert table_row(page.markdown, "flux") == [
        "flux", "1.200 s [1.190–1.210] (+20.0%)", "2.000 s [1.980–2.020] (+0.0%)", "1.67×"]
    assert table_row(page.markdown, "wan") == ["wan", "**oom**", "30.000 s", "—"]
    assert "trigger **schedule**" in page.markdown and "engines: sglang 0.5.4" in page.markdown


def test_a_confirmed_regression_is_flagged_and_listed_with_its_engine_range(history) -> None:
    for day, version in ((5, "0.5.4"), (6, "0.5.4"), (7, "0.5.5"), (8, "0.5.5")):
        slow = 1.0 if day < 7 else 1.2
        night(history, day, [make_result("flux", "sglang", (slow, slow * 1.01, slow * 0.99), engine_version=version),
                             make_result("flux", "vllm-omni", (2.0, 2.02, 1.98))])
    changes = scan(store.nightly_points(history))
    page = dashboard.build(store.results_frame(history), "run8", changes).markdown
    assert table_row(page, "flux")[1].endswith("⚠") and not table_row(page, "flux")[2].endswith("⚠")
    assert page.index("## Changes") < page.index("| case |")
    # What a job summary shows: everything above the charts, as the trigger cuts it.
    summary = page.split(f"\n{trigger.TRENDS_HEADING}")[0]
    assert "## Changes" in summary and "| flux |" in summary and "![flux]" not in summary
    assert trigger.TRENDS_HEADING == TRENDS_HEADING
    assert "| 2026-11-08 | flux | sglang | **regression** ⚠ ×1.200 | 1.000 s → 1.200 s |" in page
    assert "| 0.5.4 → 0.5.5 |" in page
    # Seen from later nights, the first slow night is the first of the new level.
    assert table_row(dashboard.build(store.results_frame(history), "run7", changes).markdown, "flux")[1].endswith("⚠")


def test_only_comparable_nightly_results_count(history) -> None:
    night(history, 5, [make_result("flux", "sglang", (5.0,))], trigger="manual", label="try-patch")
    night(history, 6, [make_result("flux", "sglang", (9.0,), config_hash="new" * 5 + "x")])
    night(history, 7, [make_result("flux", "sglang", (1.0,))])
    frame = store.results_frame(history)
    manual = dashboard.build(frame, "run5").markdown
    assert "a manual run, not part of the nightly history" in manual and "`try-patch`" in manual
    # The manual run and the changed config are not in the history the last night compares with.
    assert table_row(dashboard.build(frame, "run7").markdown, "flux")[1] == "1.000 s (+0.0%)"
    assert table_row(dashboard.build(frame, "run6").markdown, "flux")[1] == "9.000 s"


def test_files_and_inline_artifact(history, tmp_path: Path) -> None:
    page = dashboard.build(store.results_frame(history))
    index = page.write(tmp_path)
    assert index.read_text() == page.markdown and "![flux](flux.png)" in page.markdown
    png = (tmp_path / "flux.png").read_bytes()
    assert png[:4] == b"\x89PNG"
    inline = page.inline_markdown()
    assert f"![flux](data:image/png;base64,{base64.b64encode(png).decode()})" in inline


def test_empty_database_and_unknown_run(database) -> None:
    with pytest.raises(LookupError, match="holds no results"):
        dashboard.build(store.results_frame(database))
    night(database, 0, [make_result()])
    with pytest.raises(LookupError, match="no results for run 'nope'"):
        dashboard.build(store.results_frame(database), "nope")


def test_a_run_without_a_label_shows_none(database) -> None:
    labelled = night(database, 0, [make_result("flux", "sglang")], label="v0.5.23")
    unlabelled = night(database, 1, [make_result("flux", "sglang")], label=None)
    frame = store.results_frame(database)
    assert "trigger **schedule** `v0.5.23`" in dashboard.build(frame, labelled).markdown
    header = dashboard.build(frame, unlabelled).markdown.splitlines()[2]
    assert header.endswith("trigger **schedule**") and "nan" not in header
