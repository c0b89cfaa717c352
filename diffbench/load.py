"""Throughput under load: one case's request sent by several clients at once, level by level.

The way sglang's `bench_serving` does it: at each concurrency level a fixed number of requests,
arriving all at once (`request_rate: inf`) or as a Poisson process, at most `concurrency` in
flight; requests per second over the level's wall time, and per-request latency percentiles.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from diffbench.errors import BadOutput, RequestFailed, RequestTimeout

# Arrival times of a finite request rate are drawn with this seed, so every engine gets the same ones.
ARRIVAL_SEED = 0


@dataclass(frozen=True)
class LoadLevel:
    """What one concurrency level measured; latencies are client seconds of the requests that succeeded."""

    concurrency: int
    requests: int
    failed: int
    wall_s: float
    requests_per_s: float
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    first_error: str | None = None
    # Requests given up at their deadline: the server may still be working on them.
    abandoned: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def concurrency_levels(max_concurrency: int) -> list[int]:
    """1, 2, 4 … below `max_concurrency`, then `max_concurrency` itself."""
    levels, level = [], 1
    while level < max_concurrency:
        levels.append(level)
        level *= 2
    return [*levels, max_concurrency]


def arrivals(count: int, rate: float | Literal["inf"]) -> list[float]:
    """Offsets in seconds from the level's start at which each request may be sent."""
    if rate == "inf":
        return [0.0] * count
    gaps = np.random.default_rng(ARRIVAL_SEED).exponential(1 / rate, count)
    return [0.0, *np.cumsum(gaps[:-1]).tolist()]


def level(send: Callable[[], float], concurrency: int, requests: int, rate: float | Literal["inf"]) -> LoadLevel:
    """Send `requests` requests, at most `concurrency` at once; `send` sends one and returns its latency.

    A request that fails (an error answer, a bad output, no answer in time) is counted, not raised:
    an engine refusing load is a finding. Anything else (the server died, the case's time is up)
    is raised, and the requests not yet sent are dropped.
    """
    count = max(requests, concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    abandoned = 0
    lock = threading.Lock()
    started = time.monotonic()

    def one(offset: float) -> None:
        nonlocal abandoned
        time.sleep(max(0.0, started + offset - time.monotonic()))
        try:
            latency = send()
        except (RequestFailed, BadOutput) as exc:
            with lock:
                errors.append(str(exc))
                abandoned += isinstance(exc, RequestTimeout)
            return
        with lock:
            latencies.append(latency)

    # The pool's size is the concurrency: a request waits for a free client as in bench_serving.
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="load") as pool:
        try:
            for future in [pool.submit(one, offset) for offset in arrivals(count, rate)]:
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    wall_s = time.monotonic() - started
    p50, p90, p99 = (float(v) for v in np.percentile(latencies, [50, 90, 99])) if latencies else (None,) * 3
    return LoadLevel(concurrency, count, len(errors), round(wall_s, 4), round(len(latencies) / wall_s, 4),
                     p50, p90, p99, errors[0] if errors else None, abandoned)
