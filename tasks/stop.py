"""Step 6: stop the server's whole process group and check its GPU memory came back."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from diffbench.gpus import wait_memory_released
from diffbench.launcher import Server
from tasks.retry import RETRIES, is_retryable


@task(task_run_name="{server.spec.pair.framework}: stop", cache_policy=NO_CACHE,
      retry_condition_fn=is_retryable, **RETRIES)
def stop_server(server: Server) -> dict[int, float]:
    server.stop()
    held = wait_memory_released(server.spec.gpus)
    if held:
        get_run_logger().warning("GPU memory still held after stop (MiB by GPU): %s", held)
    return held
