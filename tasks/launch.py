"""Step 2: start the server and wait until it is ready, alive and lists its model."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from diffbench.cases import Pair
from diffbench.download import Download
from diffbench.launcher import Server
from diffbench.measure import Deadline, launch
from tasks.retry import RETRIES, is_retryable


@task(task_run_name="{pair.case.id}/{pair.framework}: launch", cache_policy=NO_CACHE,
      retry_condition_fn=is_retryable, **RETRIES)
def launch_server(pair: Pair, download: Download, gpus: tuple[int, ...], workdir: Path, deadline: Deadline,
                  run_id: str) -> Server:
    server = launch(pair, download, gpus, workdir, deadline, run_id)
    get_run_logger().info("ready in %.2f s on GPUs %s (%s): %s", server.ready_s, list(gpus) or "none",
                          server.handle.description, " ".join(server.argv))
    return server
