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
