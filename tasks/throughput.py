"""Step 4b: the case under load, at each concurrency level of its throughput block."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from diffbench import measure
from diffbench.cases import Pair
from diffbench.launcher import Server
from diffbench.load import LoadLevel
from diffbench.measure import Deadline


@task(task_run_name="{pair.case.id}/{pair.framework}: throughput", cache_policy=NO_CACHE)
def measure_throughput(server: Server, pair: Pair, image: bytes | None, deadline: Deadline) -> list[LoadLevel]:
    levels = measure.throughput(server, pair, image, deadline)
    for level in levels:
        get_run_logger().info("concurrency %d: %.3f requests/s, p50 %s s, p99 %s s, %d failed", level.concurrency,
                              level.requests_per_s, level.p50_s, level.p99_s, level.failed)
    return levels
