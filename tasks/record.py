"""Writing the run and each result as soon as it exists."""

from __future__ import annotations

import getpass
import hashlib
import socket
import uuid
from datetime import UTC, datetime

from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal

import diffbench
from diffbench.cases import Pair
from diffbench.config import CaseMatrix, NotRun
from diffbench.errors import StorageUnavailable
from diffbench.gpus import Hardware
from diffbench.launcher import reap_leftovers, stop_reason
from diffbench.measure import CaseRecord, not_run_result
from diffbench.processes import owner_process, same_process
from diffbench.results import CaseResult, Outcome, RunInfo, Trigger
from diffbench.settings import Settings
from diffbench.storage import store
from diffbench.storage.recorder import Recorder
from diffbench.storage.store import redacted


@task(task_run_name="start run", cache_policy=NO_CACHE)
def start_run(recorder: Recorder, matrix: CaseMatrix, pairs: list[Pair], not_run: list[tuple[str, str, NotRun]],
              trigger: Trigger, label: str | None, hardware: Hardware, settings: Settings,
              pull_request: int | None = None) -> RunInfo:
    """Close what a killed run left behind, then record the run and its plan (idempotent per flow run).

    Every pair is stored `pending` and every (case, framework) of `not_run` as not run, so a run
    that stops halfway still lists each case it did not finish.
    """
    logger = get_run_logger()
    host = f"{getpass.getuser()}@{socket.gethostname()}"
    for leftover in reap_leftovers(settings.state_dir):
        logger.warning("stopped a leftover from an earlier run: %s", leftover)
    for run_id in mark_killed_runs(recorder, host):
        logger.warning("run %s ended without being marked (its process was killed): marked crashed", run_id)
    flow_run_id = runtime.flow_run.id
    owner = owner_process()
    run = RunInfo(
        id=flow_run_id or str(uuid.uuid4()), flow_run_id=flow_run_id, trigger=trigger,
        label=label, baseline=matrix.matrix.baseline, started_at=datetime.now(UTC), host=host,
        gpu_model=hardware.gpu_model, driver=hardware.driver, diffbench_version=diffbench.__version__,
        config_path=str(matrix.path), config_sha256=hashlib.sha256(matrix.path.read_bytes()).hexdigest(),
        owner_pid=owner.pid, owner_started=owner.started, pull_request=pull_request,
    )
    stored = recorder.open_run(run)
    cases = {case.id: case for case in matrix.matrix.cases}
    kept = [not_run_result(cases[case_id], framework, why, hardware.gpu_model, settings.host_label)
            for case_id, framework, why in not_run]
    for result in kept:
        logger.warning("%s/%s: not run: %s", result.case_id, result.framework, result.error_message)
    recorder.record_all(run.id, [CaseRecord(p, hardware.gpu_model, settings.host_label).result("pending")
                                 for p in pairs] + kept)
    logger.info("run %s (%s) on %s, %s; results go to %s%s", run.id, trigger, run.host, hardware.gpu_model,
                redacted(recorder.url), "" if stored else " (database unreachable: spooled)")
    return run


def measured_before(recorder: Recorder) -> list[Outcome]:
    """What an earlier attempt of this flow run measured (a Retry from the UI): kept, never measured again.

    The database is the persistence: each result was stored as it finished, keyed by this flow run.
    """
    flow_run_id = runtime.flow_run.id
    if not flow_run_id or runtime.flow_run.run_count <= 1:
        return []
    try:
        outcomes = store.run_outcomes(recorder.engine(), flow_run_id)
    except StorageUnavailable:
        return []  # measured again: a retry never skips what it cannot see
    kept = [o for o in outcomes if o.status == "ok"]
    if kept:
        get_run_logger().info("attempt %d of this run: keeping %d case(s) measured before: %s",
                              runtime.flow_run.run_count, len(kept),
                              ", ".join(f"{o.case_id}/{o.framework}" for o in kept))
    return kept


def mark_killed_runs(recorder: Recorder, host: str) -> list[str]:
    """Runs of this host still marked running whose process is gone: marked `crashed`."""
    try:
        running = store.running_runs(recorder.engine(), host)
    except StorageUnavailable:
        return []  # checked again by the next run that reaches the database
    killed = [run_id for run_id, pid, started in running if pid is None or not same_process(pid, started)]
    for run_id in killed:
        recorder.stop(run_id, "crashed", "its diffbench process ended without finishing the run (killed, or its "
                                         "host went down)")
    return killed


def mark_stopped(recorder: Recorder, run_id: str, stop: BaseException) -> str:
    """Mark a run that a signal, a cancellation or a bug stopped before its end; return its new status."""
    reason = stop_reason()
    if reason or isinstance(stop, KeyboardInterrupt | TerminationSignal):
        status, why = "cancelled", f"the run was stopped by {reason or type(stop).__name__} before this case finished"
    else:
        status, why = "crashed", f"the run crashed before this case finished: {type(stop).__name__}: {stop}"
    recorder.stop(run_id, status, why)
    get_run_logger().warning("run %s %s: %s", run_id, status, why.split(" before ")[0])
    return status


@task(task_run_name="{result.case_id}/{result.framework}: store", cache_policy=NO_CACHE)
def record_result(recorder: Recorder, run_id: str, result: CaseResult) -> bool:
    stored = recorder.record(run_id, result)
    if not stored:
        get_run_logger().warning("database unreachable: result spooled in %s", recorder.spool.directory)
    return stored


@task(task_run_name="finish run", cache_policy=NO_CACHE)
def finish_run(recorder: Recorder, run_id: str, outcomes: list[Outcome]) -> bool:
    status = "ok" if all(o.status in ("ok", "not_run") for o in outcomes) else "failed"
    versions = {o.framework: o.engine_version for o in outcomes if o.engine_version}
    return recorder.finish(run_id, status, versions)
