"""Throughput levels: arrival times, the concurrency cap, percentiles and failures counted."""

from __future__ import annotations

import threading
import time

import pytest

from diffbench.errors import BadOutput, RequestFailed, RequestTimeout, ServerExited
from diffbench.load import arrivals, concurrency_levels, level


def test_levels_double_up_to_and_including_the_maximum() -> None:
    assert concurrency_levels(1) == [1]
    assert concurrency_levels(2) == [1, 2]
    assert concurrency_levels(6) == [1, 2, 4, 6]
    assert concurrency_levels(8) == [1, 2, 4, 8]


def test_arrivals_are_all_at_once_or_a_seeded_poisson_process() -> None:
    assert arrivals(3, "inf") == [0.0, 0.0, 0.0]
    poisson = arrivals(2000, 4.0)
    assert poisson == arrivals(2000, 4.0), "every engine gets the same arrival times"
    assert poisson[0] == 0.0 and poisson == sorted(poisson)
    assert poisson[-1] / 1999 == pytest.approx(1 / 4.0, rel=0.1)


def test_at_most_concurrency_requests_are_in_flight_and_each_is_timed() -> None:
    in_flight, peak, lock = 0, 0, threading.Lock()

    def send() -> float:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return 0.05

    measured = level(send, concurrency=2, requests=6, rate="inf")
    assert peak == 2
    assert (measured.concurrency, measured.requests, measured.failed) == (2, 6, 0)
    assert measured.wall_s >= 3 * 0.05
    assert measured.requests_per_s == pytest.approx(6 / measured.wall_s, rel=0.01)
    assert measured.p50_s == measured.p90_s == measured.p99_s == 0.05


def test_a_level_sends_at_least_one_request_per_client() -> None:
    assert level(lambda: 0.01, concurrency=4, requests=1, rate="inf").requests == 4


def test_percentiles_are_of_the_requests_that_succeeded() -> None:
    latencies = iter([0.1, 0.2, 0.3, 0.4])
    lock = threading.Lock()

    def send() -> float:
        with lock:
            latency = next(latencies, None)
        if latency is None:
            raise RequestFailed("HTTP 503: busy", status_code=503)
        return latency

    measured = level(send, concurrency=1, requests=5, rate="inf")
    assert (measured.requests, measured.failed, measured.first_error) == (5, 1, "HTTP 503: busy")
    assert (measured.p50_s, measured.p90_s) == pytest.approx((0.25, 0.37))


def test_bad_outputs_and_timeouts_are_counted_and_a_timeout_marks_the_server_busy() -> None:
    answers = iter([BadOutput("image is one constant colour (0)"), RequestTimeout("no answer before the deadline"),
                    0.2])
    lock = threading.Lock()

    def send() -> float:
        with lock:
            answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    measured = level(send, concurrency=1, requests=3, rate="inf")
    assert (measured.failed, measured.abandoned, measured.p50_s) == (2, 1, 0.2)
    assert measured.first_error == "image is one constant colour (0)"


def test_a_dead_server_stops_the_level_without_sending_the_rest() -> None:
    sent = []

    def send() -> float:
        sent.append(1)
        raise ServerExited("server exited with code 137")

    with pytest.raises(ServerExited):
        level(send, concurrency=1, requests=20, rate="inf")
    assert len(sent) < 20
