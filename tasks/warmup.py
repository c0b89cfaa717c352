"""Step 3: unmeasured requests at the measured shape; the first one's latency is kept."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from diffbench import measure
from diffbench.cases import Pair
from diffbench.launcher import Server
from diffbench.measure import Deadline
from tasks.retry import RETRIES, is_retryable_request


@task(task_run_name="{pair.case.id}/{pair.framework}: warm up", cache_policy=NO_CACHE,
      retry_condition_fn=is_retryable_request, **RETRIES)
def warm_up(server: Server, pair: Pair, image: bytes | None, deadline: Deadline) -> list[float]:
    latencies = measure.warm_up(server, pair, image, deadline)
    get_run_logger().info("%d warm-up request(s): %s", len(latencies), ", ".join(f"{s:.3f} s" for s in latencies))
    return latencies
