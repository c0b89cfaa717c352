"""What a run measures besides latency, together on real reference servers on CPU: throughput under
load, video polling, cost units, determinism, telemetry (absent here), memory release and the canary."""

from __future__ import annotations

import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from diffbench import canary
from diffbench.cli import main
from diffbench.client import POLL_FINE_S, POLL_MAX_S
from diffbench.gpus import CPU_SLOT
from diffbench.storage import store
from diffbench.storage.models import CanaryRow, Result, SampleRow

from factories import T0, make_run

MATRIX = """
measurement_repeats: 3
benchmark_defaults:
  throughput: {{num_requests: 3, max_concurrency: 2}}
deadlines: {{ready_s: 120, request_s: 60, case_minutes: 10}}
cases:
  - {{id: image, model: {flux}, task: text-to-image, width: 32, height: 32, num_inference_steps: 2, seed: 1,
      frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
  - {{id: video, model: {wan}, task: text-to-video, width: 64, height: 32, num_frames: 9, fps: 8,
      num_inference_steps: 2, seed: 2, frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
"""
HOST = "canary-host"


def test_a_run_stores_load_cost_determinism_release_and_a_suspect_canary(
        prefect_api, tiny_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFBENCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DIFFBENCH_DASHBOARD_DIR", str(tmp_path / "dashboard"))
    monkeypatch.setenv("DIFFBENCH_HOST_LABEL", HOST)
    url = f"sqlite:///{tmp_path / 'results.db'}"
    # Three earlier nights on which this host's CPU was ten times faster than it can be: tonight is suspect.
    tonight = canary.run_probe(Path(sys.executable), HOST, CPU_SLOT)
    engine = store.open_database(url)
    for night in range(3):
        store.save_run(engine, make_run(f"earlier-{night}", day=night, host=HOST))
        store.save_canaries(engine, f"earlier-{night}", [{
            "host": HOST, "gpu": CPU_SLOT, "device_name": tonight.device_name, "seconds": 1.0,
            "matmul_tflops": tonight.matmul_tflops * 10, "bandwidth_gbs": tonight.bandwidth_gbs,
            "suspect": None, "measured_at": (T0 + timedelta(days=night)).isoformat()}])
    config = tmp_path / "matrix.yaml"
    config.write_text(textwrap.dedent(MATRIX).format(flux=tiny_models["flux"], wan=tiny_models["wan"]))

    assert main(["run", "--config", str(config), "--database-url", url]) == 0

    with engine.connect() as connection:
        results = {r.case_id: r for r in connection.execute(select(Result))}
        samples = {case: connection.execute(select(SampleRow).where(SampleRow.result_id == r.id)
                                            .order_by(SampleRow.index)).all() for case, r in results.items()}
        canaries = connection.execute(select(CanaryRow).order_by(CanaryRow.measured_at)).all()
    engine.dispose()
    image, video = results["image"], results["video"]

    # Throughput: levels 1 and 2, three requests each (the block's), every one answered.
    for result in (image, video):
        assert [(level["concurrency"], level["requests"], level["failed"]) for level in result.throughput] == [
            (1, 3, 0), (2, 3, 0)]
        for level in result.throughput:
            assert level["requests_per_s"] == pytest.approx(3 / level["wall_s"], rel=0.01)
            assert 0 < level["p50_s"] <= level["p90_s"] <= level["p99_s"]
    # Cost units from the median, the shape and the steps asked for.
    assert image.ms_per_megapixel_step == pytest.approx(image.median_s * 1000 / (32 * 32 / 1e6 * 2))
    assert video.ms_per_megapixel_step == pytest.approx(video.median_s * 1000 / (64 * 32 * 9 / 1e6 * 2))
    assert video.seconds_per_video_second == pytest.approx(video.median_s / (9 / 8))
    assert image.seconds_per_video_second is None
    # One seed, the same picture every time, on the CPU byte for byte.
    assert image.identical_outputs and video.identical_outputs
    assert image.output_spread == video.output_spread == 0.0
    assert all(len(s.thumbnail) == 512 for rows in samples.values() for s in rows)
    # Video polling: finely near the end, so each poll bound is within 50 ms once a time is known.
    assert all(0 < s.poll_bound_s <= POLL_MAX_S for s in samples["video"])
    assert all(s.poll_bound_s <= POLL_FINE_S for s in samples["video"][1:])
    # No NVML here: the result says why there is no telemetry, and nothing is flagged as throttled.
    assert image.telemetry == video.telemetry == {**image.telemetry, "available": False,
                                                  "reason": "no GPUs (CPU run)"}
    assert image.joules_per_output is None and all(s.throttled is None for s in samples["image"])
    # No GPU memory to wait for on a CPU: no release time, rather than a made-up zero.
    assert image.memory_release_s is None and video.memory_release_s is None
    # Cold start stays with each result.
    assert image.ready_s > 0 and image.first_request_latency_s > 0
    # The canary ran first, was judged against its history and makes every result of the night suspect.
    assert [(c.gpu, c.host) for c in canaries] == [(CPU_SLOT, HOST)] * 4
    assert canaries[-1].suspect.startswith("CPU canary: matmul") and "below its median" in canaries[-1].suspect
    assert image.suspect == video.suspect == canaries[-1].suspect
    dashboard = (tmp_path / "dashboard" / "index.md").read_text()
    assert "⚠ suspect" in dashboard and "GPU telemetry absent: no GPUs (CPU run)" in dashboard
    charts = {p.name for p in (tmp_path / "dashboard").glob("*.png")}
    assert {"image-cold-start.png", "image-throughput.png", "video-cold-start.png", "video-throughput.png"} <= charts
