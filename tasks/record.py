"""Writing the run and each result as soon as it exists."""

from __future__ import annotations

import getpass
import hashlib
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE

import diffbench
from diffbench.config import CaseMatrix
from diffbench.gpus import Hardware
from diffbench.launcher import reap_leftovers
from diffbench.results import CaseResult, Outcome, RunInfo, Trigger
from diffbench.storage.recorder import Recorder
from diffbench.storage.store import redacted


@task(cache_policy=NO_CACHE)
def start_run(recorder: Recorder, matrix: CaseMatrix, trigger: Trigger, label: str | None, hardware: Hardware,
              state_dir: Path) -> RunInfo:
    """Stop servers a crashed run left behind, then record the run (idempotent per flow run)."""
    logger = get_run_logger()
    for leftover in reap_leftovers(state_dir):
        logger.warning("stopped a leftover from an earlier run: %s", leftover)
    flow_run_id = runtime.flow_run.id
    run = RunInfo(
        id=flow_run_id or str(uuid.uuid4()), flow_run_id=flow_run_id, trigger=trigger,
        label=label, baseline=matrix.matrix.baseline, started_at=datetime.now(UTC),
        host=f"{getpass.getuser()}@{socket.gethostname()}",
        gpu_model=hardware.gpu_model, driver=hardware.driver, diffbench_version=diffbench.__version__,
        config_path=str(matrix.path), config_sha256=hashlib.sha256(matrix.path.read_bytes()).hexdigest(),
    )
    stored = recorder.open_run(run)
    logger.info("run %s (%s) on %s, %s; results go to %s%s", run.id, trigger, run.host, hardware.gpu_model,
                redacted(recorder.url), "" if stored else " (database unreachable: spooled)")
    return run


@task(task_run_name="{result.case_id}/{result.framework}: store", cache_policy=NO_CACHE)
def record_result(recorder: Recorder, run_id: str, result: CaseResult) -> bool:
    stored = recorder.record(run_id, result)
    if not stored:
        get_run_logger().warning("database unreachable: result spooled in %s", recorder.spool.directory)
    return stored


@task(cache_policy=NO_CACHE)
def finish_run(recorder: Recorder, run_id: str, outcomes: list[Outcome]) -> bool:
    status = "ok" if all(o.status == "ok" for o in outcomes) else "failed"
    versions = {o.framework: o.engine_version for o in outcomes if o.engine_version}
    return recorder.finish(run_id, status, versions)
