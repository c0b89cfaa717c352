"""Step 6: stop the server's whole process group and check its GPU memory came back to idle."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from diffbench.gpus import Released, wait_memory_released
from diffbench.launcher import Server
from tasks.retry import RETRIES, is_retryable


def _name() -> str:
    """`sglang: stop (flux_1024, flux_768)`: the framework and every case its server held."""
    spec = task_run.parameters["server"].spec
    return f"{spec.pair.framework}: stop ({', '.join(p.case.id for p in spec.pairs)})"


@task(task_run_name=_name, cache_policy=NO_CACHE,
      retry_condition_fn=is_retryable, **RETRIES)
def stop_server(server: Server, idle_mb: dict[int, float]) -> Released:
    """`idle_mb`: the server's GPUs' memory readings at the start of the run."""
    server.stop()
    released = wait_memory_released({gpu: idle_mb[gpu] for gpu in server.spec.gpus if gpu in idle_mb})
    if released.held_mb:
        get_run_logger().warning("GPU memory still held %.0f s after stop (MiB above idle, by GPU): %s",
                                 released.seconds, released.held_mb)
    elif server.spec.gpus:
        get_run_logger().info("GPUs %s back to idle memory %.2f s after stop", list(server.spec.gpus),
                              released.seconds)
    return released
