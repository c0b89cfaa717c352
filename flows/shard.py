"""One shard of a comparison run, on whichever GPU worker takes it; results go to the parent's run."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from diffbench import demo
from diffbench.config import load_matrix
from diffbench.gpus import detect
from diffbench.launcher import stop_servers_on_signals
from diffbench.settings import Settings
from diffbench.storage.recorder import Recorder
from flows.measure import measure_pairs

SHARD_DEPLOYMENT = "diffusion-shard/shard"


@flow(name="diffusion-shard", task_runner=ThreadPoolTaskRunner(max_workers=16))
def diffusion_shard(config: str, pairs: list[str], run_id: str, engines: dict[str, str] | None = None
                    ) -> dict[str, int]:
    """Measure `pairs` ("case/framework") of `config` and record them under the parent's `run_id`.

    Args:
        config: Case matrix file, relative to the project checkout on the worker.
        pairs: The (case, framework) pairs of this shard, as "case_id/framework".
        run_id: The parent run the results belong to.
        engines: The parent's engine builds (framework → build).
    """
    stop_servers_on_signals()
    settings = Settings()
    matrix = load_matrix(demo.matrix_path(config, settings.state_dir), engines)
    wanted = set(pairs)
    selected = [p for p in matrix.pairs if f"{p.case.id}/{p.framework}" in wanted]
    hardware = detect(settings.gpus)
    with Recorder(settings.database_url.get_secret_value(), settings.spool_dir) as recorder:
        results = measure_pairs(selected, matrix, run_id, recorder, hardware, settings)
        recorder.flush()  # the parent reads results from the database: none may stay in this host's spool
    failed = sum(r.status != "ok" for r in results)
    get_run_logger().info("shard measured %d pair(s), %d failed", len(results), failed)
    return {"measured": len(results), "failed": failed}
