"""The dashboard: the table (spread, ratios, noisy changes, failures), the run's details, charts and files."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployments import trigger
from diffbench import dashboard
from diffbench.dashboard.history import comparable_history
from diffbench.dashboard.page import TRENDS_HEADING
from diffbench.load import LoadLevel
from diffbench.regressions import scan
from diffbench.storage import store
from diffbench.telemetry import Telemetry

from factories import make_result, make_run, make_sample


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
        "flux", "1.200 s [1.190–1.210] (+20.0%)", "2.000 s [1.980–2.020] (+0.0%, noisy)", "1.67×"]
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
    assert table_row(dashboard.build(frame, "run7").markdown, "flux")[1] == "1.000 s (+0.0%)"  # no interval
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


def test_a_change_inside_the_interval_is_too_noisy_to_judge(history) -> None:
    night(history, 5, [make_result("flux", "sglang", (1.03, 1.2, 0.9)),
                       make_result("flux", "vllm-omni", (2.1, 2.11, 2.09))])
    row = table_row(dashboard.build(store.results_frame(history)).markdown, "flux")
    # ±15 % around the median cannot tell a 3 % change; ±0.5 % can tell 5 %.
    assert row[1:3] == ["1.030 s [0.900–1.200] (+3.0%, noisy)", "2.100 s [2.090–2.110] (+5.0%)"]


def thumb(pixels: np.ndarray) -> str:
    return pixels.astype(np.uint8).tobytes().hex()


GREY = np.arange(256) % 200
NEAR, FAR = thumb(GREY + 3), thumb(255 - GREY)  # 3/255 = 1.2 % from GREY; about half the grey range away


def sample(latency: float, thumbnail: np.ndarray, **fields: object) -> object:
    return replace(make_sample(latency), thumbnail=thumb(thumbnail), output_sha256=thumb(thumbnail)[:64], **fields)


def measured_night(database) -> object:
    """Two cases of one night, with everything a result can store beyond latency."""
    telemetry = Telemetry(True, gpus=[0], points=40, peak_memory_mb=20480.0, energy_j=937.5, energy_j_per_output=312.5,
                          throttle_reasons=["hw_slowdown"], throttled_requests=[0, 2]).to_json()
    night(database, 0, [
        make_result("flux", "sglang", samples=[sample(1.0, GREY), sample(1.01, GREY), sample(0.99, GREY + 3)],
                    num_inference_steps=4, telemetry=telemetry, download_s=12.34, ready_s=95.0,
                    first_request_latency_s=1.5, memory_release_s=2.25,
                    throughput=[LoadLevel(2, 8, 0, 4.4, 1.8, 1.1, 1.25, 1.3).to_json(),
                                LoadLevel(1, 8, 0, 8.0, 1.0, 1.0, 1.1, 1.2).to_json()]),
        make_result("flux", "vllm-omni", samples=[sample(2.0, 255 - GREY)] * 3,
                    telemetry=Telemetry(False, reason="nvidia-smi not found").to_json(),
                    suspect="matmul 40 % below this GPU's history",
                    throughput=[LoadLevel(1, 8, 1, 9.0, 0.78, 2.0, 2.1, 2.2, "timeout").to_json()]),
        make_result("wan", "sglang", task="text-to-video", fps=16,
                    samples=[sample(2.0, GREY, num_frames=80)] * 2),
        make_result("wan", "vllm-omni", task="text-to-video", samples=[sample(3.0, GREY + 3, num_frames=80)]),
        make_result("hunyuan", "sglang", error_class="oom"),
    ], baseline="sglang")
    return database


def details_row(markdown: str, case_id: str, framework: str) -> list[str]:
    details = markdown.split("## Details of this run")[1]
    line = next(line for line in details.splitlines() if line.startswith(f"| {case_id} | {framework} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_details_of_the_run(database) -> None:
    page = dashboard.build(store.results_frame(measured_night(database))).markdown
    assert page.index("| case | sglang |") < page.index("## Details of this run") < page.index(TRENDS_HEADING)
    assert details_row(page, "flux", "sglang") == [
        # 64×64 outputs: 1 s over 0.004 megapixels and 4 steps.
        "flux", "sglang", "1.000 s", "0.900 s", "400 ms", "20,480 MiB", "312 J", "61,035 ms/MP·step", "12.3 s",
        "95.0 s", "1.50 s", "2.25 s", "differ by 1.2 %", "throttled during requests 1, 3 (hw_slowdown)"]
    # Its steps as the server reported them: 2.
    assert details_row(page, "flux", "vllm-omni") == [
        "flux", "vllm-omni", "2.000 s", "0.900 s", "400 ms", "—", "—", "244,141 ms/MP·step", "—", "—", "—", "—",
        "identical",
        "GPU telemetry absent: nvidia-smi not found; ⚠ suspect: matmul 40 % below this GPU's history"]
    # 80 frames at 16 fps are 5 s of video, made in 2 s.
    assert details_row(page, "wan", "sglang")[7] == "0.400 s/video-s"
    assert details_row(page, "wan", "vllm-omni")[12] == "—"  # one request: nothing to compare
    assert "| hunyuan |" not in page.split("## Details of this run")[1]
    assert table_row(page, "flux")[2] == "2.000 s [2.000–2.000] ⚠ suspect"


def test_outputs_are_compared_across_engines(database) -> None:
    page = dashboard.build(store.results_frame(measured_night(database))).markdown
    assert "- **flux** against sglang: vllm-omni 50.2 % (different picture)" in page
    assert "- **wan** against sglang: vllm-omni 1.2 % (same picture)" in page
    assert "- **hunyuan**" not in page


def test_throughput_and_cold_start_charts_are_written_and_linked(database, tmp_path: Path) -> None:
    page = dashboard.build(store.results_frame(measured_night(database)))
    assert set(page.charts) == {"flux", "flux-cold-start", "flux-throughput", "wan", "hunyuan"}
    assert "![flux cold start](flux-cold-start.png)" in page.markdown
    assert "![flux throughput](flux-throughput.png)" in page.markdown
    page.write(tmp_path)
    for name, size in (("flux-cold-start", (1200, 320)), ("flux-throughput", (1000, 320))):
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.format == "PNG" and image.size == size
    assert "](data:image/png;base64," in page.inline_markdown() and "-throughput.png)" not in page.inline_markdown()
    levels = page.markdown.split("![flux throughput](flux-throughput.png)")[1].split("###")[0]
    assert [line for line in levels.splitlines() if line.startswith("| ")] == [
        "| framework | concurrency | req/s | p50 | p90 | p99 | failed |",
        "| sglang | 1 | 1.00 | 1.00 s | 1.10 s | 1.20 s | 0 of 8 |",
        "| sglang | 2 | 1.80 | 1.10 s | 1.25 s | 1.30 s | 0 of 8 |",
        "| vllm-omni | 1 | 0.780 | 2.00 s | 2.10 s | 2.20 s | 1 of 8 |",
    ]


def test_a_suspect_result_is_left_out_of_the_history(history) -> None:
    night(history, 5, [make_result("flux", "sglang", (3.0,), suspect="slow GPU")])
    night(history, 6, [make_result("flux", "sglang", (1.0,))])
    frame = store.results_frame(history)
    last = frame[(frame["run_id"] == "run6") & (frame["framework"] == "sglang")].iloc[0]
    assert comparable_history(frame, last) == [1.0] * 5


def test_a_changed_engine_environment_is_noted_once(database) -> None:
    """The same engine version on a worker whose other packages moved: the page says so on the first night."""
    for day, packages in enumerate(("aaaa", "aaaa", "bbbb", "bbbb")):
        night(database, day, [make_result("flux", "sglang", engine_packages=packages, engine_version="0.5.23")])
    frame = store.results_frame(database)
    runs = frame.sort_values("started_at")["run_id"].unique()
    notes = [details_row(dashboard.build(frame, run_id).markdown, "flux", "sglang")[-1] for run_id in runs]
    assert notes == ["—", "—", "engine environment changed since the last result: packages aaaa → bbbb", "—"]
