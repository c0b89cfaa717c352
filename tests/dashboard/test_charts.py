"""Charts: trend segments per comparable series with intervals, failures on the axis; cold start; throughput."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from PIL import Image

from diffbench.dashboard.charts import (
    STYLES,
    _segments,
    cold_start_figure,
    styles_for,
    throughput_figure,
    trend_figure,
    trend_png,
)
from diffbench.load import LoadLevel
from diffbench.regressions import Change


def history() -> pd.DataFrame:
    rows = []
    for day in range(6):
        rows.append({"started_at": pd.Timestamp("2026-11-01", tz="UTC") + pd.Timedelta(days=day),
                     "run_id": f"run{day}", "error_class": None if day != 3 else "oom",
                     "framework": "sglang", "status": "ok" if day != 3 else "failed", "trigger": "schedule",
                     "median_s": 1.0 + day / 10 if day != 3 else None, "max_s": 1.2, "min_s": 0.9,
                     # Old results have no interval.
                     "ci_low_s": 0.95 + day / 10 if day in (1, 4) else None,
                     "ci_high_s": 1.1 + day / 10 if day in (1, 4) else None,
                     "series_key": "a" if day < 4 else "b"})
    rows.append(rows[0] | {"framework": "vllm-omni", "trigger": "manual", "median_s": 2.0, "series_key": "c"})
    return pd.DataFrame(rows)


def test_a_config_change_starts_a_new_segment() -> None:
    sglang = history()[history()["framework"] == "sglang"]
    segments = _segments(sglang[sglang["status"] == "ok"])
    assert [len(s) for s in segments] == [3, 2]


def test_png_is_drawn_with_sglangs_styles() -> None:
    styles = styles_for(["sglang", "vllm-omni", "diffusers-a", "diffusers-b"])
    assert styles["sglang"] == STYLES["sglang"] and styles["vllm-omni"] == STYLES["vllm-omni"]
    assert styles["diffusers-a"] != styles["diffusers-b"]
    png = trend_png("flux", history(), styles_for(["sglang", "vllm-omni"]))
    assert Image.open(io.BytesIO(png)).size == (900, 360)


@pytest.mark.parametrize("hour", ["00:00", "10:00", "23:30"])
def test_one_run_reads_its_own_date(hour: str) -> None:
    run = history().iloc[[0]].assign(started_at=pd.Timestamp(f"2026-11-29 {hour}", tz="UTC"))
    figure = trend_figure("flux", run, styles_for(["sglang"]))
    figure.draw_without_rendering()
    axes = figure.axes[0]
    dates = [label.get_text() for label in axes.get_xticklabels() if ":" not in label.get_text()]
    assert dates == ["Nov-29"] and axes.xaxis.get_offset_text().get_text() == "2026-Nov-29"


def test_the_y_axis_shows_a_5_percent_step_and_changes_are_marked() -> None:
    rows = [{"started_at": pd.Timestamp("2026-11-01", tz="UTC") + pd.Timedelta(days=day), "run_id": f"run{day}",
             "framework": "sglang", "status": "ok", "error_class": None, "trigger": "schedule",
             "median_s": 10.0 if day < 10 else 10.5, "ci_low_s": None, "ci_high_s": None, "series_key": "a"}
            for day in range(14)]
    rows.append(rows[-1] | {"started_at": rows[-1]["started_at"] + pd.Timedelta(days=1), "run_id": "stopped",
                            "status": "failed", "error_class": "cancelled", "median_s": None})
    regression = Change("flux", "sglang", "client_latency_s", "2026-11-11", "run10", "regression", 1.05, 10.0, 10.5,
                        0.99, "v9", "v10", 2)
    axes = trend_figure("flux", pd.DataFrame(rows), styles_for(["sglang"]), [regression]).axes[0]
    low, high = axes.get_ylim()
    assert 9.0 < low < 10.0 and 10.5 < high < 11.0  # not from zero: the step is a tenth of the height
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert "regression ×1.05" in labels and "sglang failed" not in labels  # a cancelled run is no failure


def test_the_interval_is_an_error_bar_on_each_point_that_has_one() -> None:
    axes = trend_figure("flux", history(), styles_for(["sglang", "vllm-omni"])).axes[0]
    bars = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1  # sglang's two points with an interval; vllm-omni has none
    segments = bars[0].lines[2][0].get_segments()
    assert [(round(s[0][1], 3), round(s[1][1], 3)) for s in segments] == [(1.05, 1.2), (1.35, 1.5)]


def cold_starts() -> pd.DataFrame:
    day = pd.Timestamp("2026-11-01", tz="UTC")
    rows = [{"started_at": day + pd.Timedelta(days=d), "framework": "sglang", "download_s": 30.0 if d == 0 else 0.5,
             "ready_s": 90.0 + d, "first_request_latency_s": 2.0 + d / 10} for d in range(3)]
    rows.append({"started_at": day, "framework": "vllm-omni", "download_s": None, "ready_s": 60.0,
                 "first_request_latency_s": None})
    return pd.DataFrame(rows)


def test_cold_start_has_a_panel_per_phase_with_each_frameworks_values() -> None:
    figure = cold_start_figure("flux", cold_starts(), styles_for(["sglang", "vllm-omni"]))
    download, ready, first = figure.axes
    assert [a.get_title() for a in figure.axes] == ["download", "launch to ready", "first request"]
    assert [line.get_ydata().tolist() for line in download.get_lines()] == [[30.0, 0.5, 0.5]]
    assert [line.get_ydata().tolist() for line in ready.get_lines()] == [[90.0, 91.0, 92.0], [60.0]]
    assert ready.get_lines()[1].get_color() == STYLES["vllm-omni"]["color"]
    assert first.get_lines()[0].get_ydata().tolist() == [2.0, 2.1, 2.2]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["sglang", "vllm-omni"]


def test_throughput_draws_rate_and_median_latency_against_concurrency() -> None:
    levels = {"sglang": [LoadLevel(1, 8, 0, 8.0, 1.0, 1.0, 1.1, 1.2).to_json(),
                         LoadLevel(2, 8, 0, 4.4, 1.8, 1.1, 1.2, 1.3).to_json()],
              "vllm-omni": [LoadLevel(1, 8, 8, 1.0, 0.0, None, None, None, "timeout").to_json()]}
    rate, latency = throughput_figure("flux", levels, styles_for(["sglang", "vllm-omni"])).axes
    assert [(line.get_xdata().tolist(), line.get_ydata().tolist()) for line in rate.get_lines()] == [
        ([1, 2], [1.0, 1.8]), ([1], [0.0])]
    assert latency.get_lines()[0].get_ydata().tolist() == [1.0, 1.1]
    assert math.isnan(latency.get_lines()[1].get_ydata()[0])  # all failed: no latency, not zero
    assert [t.get_text() for t in rate.get_xticklabels()] == ["1", "2"]
