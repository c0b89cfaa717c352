"""Trend charts: segments per comparable series, failures on the axis, PNG out."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from PIL import Image

from diffbench.dashboard.charts import STYLES, _segments, styles_for, trend_figure, trend_png
from diffbench.regressions import Change


def history() -> pd.DataFrame:
    rows = []
    for day in range(6):
        rows.append({"started_at": pd.Timestamp("2026-11-01", tz="UTC") + pd.Timedelta(days=day),
                     "run_id": f"run{day}", "error_class": None if day != 3 else "oom",
                     "framework": "sglang", "status": "ok" if day != 3 else "failed", "trigger": "schedule",
                     "median_s": 1.0 + day / 10 if day != 3 else None, "max_s": 1.2, "min_s": 0.9,
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
             "median_s": 10.0 if day < 10 else 10.5, "series_key": "a"} for day in range(14)]
    rows.append(rows[-1] | {"started_at": rows[-1]["started_at"] + pd.Timedelta(days=1), "run_id": "stopped",
                            "status": "failed", "error_class": "cancelled", "median_s": None})
    regression = Change("flux", "sglang", "client_latency_s", "2026-11-11", "run10", "regression", 1.05, 10.0, 10.5,
                        0.99, "v9", "v10", 2)
    axes = trend_figure("flux", pd.DataFrame(rows), styles_for(["sglang"]), [regression]).axes[0]
    low, high = axes.get_ylim()
    assert 9.0 < low < 10.0 and 10.5 < high < 11.0  # not from zero: the step is a tenth of the height
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert "regression ×1.05" in labels and "sglang failed" not in labels  # a cancelled run is no failure
