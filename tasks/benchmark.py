"""Step 4: the measured requests."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from diffbench import measure
from diffbench.cases import Pair
from diffbench.client import Sample
from diffbench.launcher import Server
from diffbench.measure import Deadline
from diffbench.stats import summarize
from tasks.retry import RETRIES, is_retryable_request


@task(task_run_name="{pair.case.id}/{pair.framework}: benchmark", cache_policy=NO_CACHE,
      retry_condition_fn=is_retryable_request, **RETRIES)
def benchmark(server: Server, pair: Pair, image: bytes | None, samples: list[Sample],
              windows: list[tuple[float, float]], deadline: Deadline, on_sample: Callable[[], None]) -> list[Sample]:
    measured = measure.benchmark(server, pair, image, samples, windows, deadline, on_sample)
    summary = summarize([s.client_latency_s for s in measured])
    get_run_logger().info("%d request(s): median %.3f s (min %.3f, max %.3f)", summary.n, summary.median,
                          summary.min, summary.max)
    return measured
