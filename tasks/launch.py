"""Step 2: start the server and wait until it is ready, alive and lists its model."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from diffbench.cases import Pair
from diffbench.download import Download
from diffbench.engines.environments import EngineEnvironment
from diffbench.launcher import Server
from diffbench.measure import Deadline, launch
from tasks.retry import RETRIES, is_retryable


@task(task_run_name="{pair.case.id}/{pair.framework}: launch", cache_policy=NO_CACHE,
      retry_condition_fn=is_retryable, **RETRIES)
def launch_server(pair: Pair, group: tuple[Pair, ...], download: Download, environment: EngineEnvironment,
                  gpus: tuple[int, ...], workdir: Path, deadline: Deadline, run_id: str) -> Server:
    """Start the server that `group` shares, launched as its first pair says."""
    server = launch(group, download, environment, gpus, workdir, deadline, run_id)
    get_run_logger().info("ready in %.2f s on GPUs %s (%s, %s %s): %s", server.ready_s, list(gpus) or "none",
                          server.handle.description, pair.framework, server.engine_version or "version unknown",
                          " ".join(server.argv))
    return server
