"""Queries on SQLite and Postgres: idempotent writes, bounded texts, constraints."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy.exc import IntegrityError

from diffbench.storage import store

from factories import make_result, make_run, make_sample


def test_results_with_samples_and_stages_round_trip(database) -> None:
    engine = database
    store.save_run(engine, make_run())
    store.save_result(engine, "r1", make_result())
    store.save_result(engine, "r1", make_result("wan", error_class="oom", log_tail="x" * 20000))
    assert store.counts(engine) == {"runs": 1, "results": 2, "samples": 3, "stage_timings": 6}
    frame = store.results_frame(engine).set_index("case_id")
    assert frame.loc["flux", ["median_s", "min_s", "max_s", "n", "server_median_s"]].tolist() == [1.0, 0.9, 1.1, 3,
                                                                                                   0.9]
    assert frame.loc["wan", "error_class"] == "oom" and frame.loc["wan", "n"] == 0
    assert str(frame.loc["flux", "started_at"].tz) == "UTC"


def test_writes_are_idempotent_per_run_case_and_framework(database) -> None:
    engine = database
    run = make_run()
    for _ in range(2):  # a retried flow run writes the same things again
        store.save_run(engine, run)
        store.save_result(engine, "r1", make_result())
    store.save_result(engine, "r1", make_result(latencies=(2.0,)))  # the retry measured again
    assert store.counts(engine) == {"runs": 1, "results": 1, "samples": 1, "stage_timings": 2}
    assert store.results_frame(engine)["median_s"].tolist() == [2.0]


def test_negative_latency_is_refused(database) -> None:
    engine = database
    store.save_run(engine, make_run())
    with pytest.raises(IntegrityError):
        store.save_result(engine, "r1", make_result(samples=[replace(make_sample(), client_latency_s=-1.0)]))


def test_unreachable_database_is_storage_unavailable_without_the_password() -> None:
    from diffbench.errors import StorageUnavailable

    url = "postgresql+psycopg://bench:s3cret-pw@127.0.0.1:1/results"
    with pytest.raises(StorageUnavailable) as caught:
        store.open_database(url)
    assert caught.value.error_class == "storage" and "s3cret-pw" not in str(caught.value)
    assert "bench:***@127.0.0.1:1/results" in str(caught.value)


def test_new_measurements_round_trip_and_suspect_results_leave_the_nightly_history(database) -> None:
    engine = database
    telemetry = {"available": True, "energy_j_per_output": 930.0, "throttled_requests": [1]}
    levels = [{"concurrency": 2, "requests": 4, "failed": 0, "requests_per_s": 1.5, "p50_s": 1.2}]
    for night, suspect in enumerate([None, "GPU 0 canary: matmul 412 TFLOP/s, 22 % below its median"]):
        store.save_run(engine, make_run(f"r{night}", day=night))
        store.save_result(engine, f"r{night}", make_result(telemetry=telemetry, throughput=levels, suspect=suspect,
                                                          memory_release_s=0.41, num_inference_steps=2))
    frame = store.results_frame(engine)
    assert frame["joules_per_output"].tolist() == [930.0, 930.0]
    assert frame["throughput"].tolist() == [levels, levels] and frame["telemetry"].tolist() == [telemetry] * 2
    # 64x64 pixels, 2 steps, median 1.0 s: 1000 ms / (0.004096 MP x 2).
    assert frame["ms_per_megapixel_step"].tolist() == pytest.approx([1000 / (0.004096 * 2)] * 2)
    assert frame["memory_release_s"].tolist() == [0.41, 0.41] and frame["identical_outputs"].tolist() == [True] * 2
    assert [p.run_id for p in store.nightly_points(engine)[("flux", "sglang")]] == ["r0"]


def test_canary_history_is_per_host_and_gpu_oldest_first_without_suspect_readings(database) -> None:
    engine = database
    store.save_run(engine, make_run())
    reading = {"host": "h", "gpu": 0, "device_name": "NVIDIA H200", "bandwidth_gbs": 4200.0, "seconds": 0.7}
    store.save_canaries(engine, "r1", [
        reading | {"matmul_tflops": 700.0 + day, "suspect": None, "measured_at": f"2026-11-0{day}T01:00:00+00:00"}
        for day in (3, 1, 2)] + [
        reading | {"matmul_tflops": 400.0, "suspect": "slow", "measured_at": "2026-11-04T01:00:00+00:00"},
        reading | {"gpu": 1, "matmul_tflops": 1.0, "suspect": None, "measured_at": "2026-11-04T01:00:00+00:00"},
        reading | {"host": "other", "matmul_tflops": 1.0, "suspect": None, "measured_at": "2026-11-04T01:00:00+00:00"},
    ])
    assert [r.matmul_tflops for r in store.canary_history(engine, "h", [0])] == [701.0, 702.0, 703.0]
    assert [r.matmul_tflops for r in store.canary_history(engine, "h", [0], limit=2)] == [702.0, 703.0]
    assert [(r.gpu, r.matmul_tflops) for r in store.canary_history(engine, "h", [0, 1])][-1] == (1, 1.0)
