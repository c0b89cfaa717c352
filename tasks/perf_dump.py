"""Step 5: the server's own timings from its perf-dump files, where the engine writes them."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from diffbench import measure
from diffbench.cases import Pair
from diffbench.client import Sample
from diffbench.launcher import Server
from tasks.retry import RETRIES, is_retryable


@task(task_run_name="{pair.case.id}/{pair.framework}: perf dump",
      cache_policy=NO_CACHE, retry_condition_fn=is_retryable, **RETRIES)
def collect_perf_dump(server: Server, pair: Pair, samples: list[Sample]) -> list[Sample]:
    collected = measure.collect_perf_dumps(server, samples)
    missing = sum(sample.perf_dump_missing for sample in collected)
    if missing:
        get_run_logger().warning("%d of %d perf dump(s) never appeared; server times come from the responses",
                                 missing, len(collected))
    return collected
