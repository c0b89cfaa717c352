"""The diffusion comparison: every case on every framework, stored as it finishes, then the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import TerminationSignal
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from diffbench import demo
from diffbench.cases import Pair
from diffbench.compare import LATEST_NIGHTLY, NO_COMPARISON
from diffbench.config import load_matrix
from diffbench.errors import ShardLost, StorageUnavailable
from diffbench.gpus import detect
from diffbench.launcher import stop_servers_on_signals
from diffbench.measure import CaseRecord
from diffbench.results import UNFINISHED, Outcome, Trigger
from diffbench.settings import Settings
from diffbench.sharding import shard_pairs
from diffbench.storage import store
from diffbench.storage.recorder import Recorder
from diffbench.storage.store import NO_PASSWORD_URL, public_url
from flows.measure import measure_pairs
from flows.shard import SHARD_DEPLOYMENT
from tasks.announce import announce
from tasks.compare import check_baseline, publish_comparison
from tasks.dashboard import render_dashboard
from tasks.progress import RunProgress
from tasks.record import finish_run, mark_stopped, measured_before, record_result, start_run


class CasesFailed(Exception):
    """Raised at the very end, after everything measured was stored and rendered."""


# What a run may say it is; `schedule` and `pr` are decided by Prefect's scheduler and `pull_request`.
RequestedTrigger = Literal["manual", "api", "schedule"]

SHARD_PROGRESS_S = 15.0

# What a flow call raises once a signal stopped its run (and the run is marked): Ctrl-C, SIGTERM.
STOPPED = (KeyboardInterrupt, TerminationSignal)


def _shard_name() -> str:
    """`shard 0: flux_1024/sglang, wan_480p/sglang`: the cases it holds."""
    parameters = runtime.task_run.parameters
    return f"shard {parameters['index']}: " + ", ".join(f"{p.case.id}/{p.framework}" for p in parameters["pairs"])


@task(task_run_name=_shard_name, cache_policy=NO_CACHE)
def run_shard(config: str, pairs: list[Pair], run_id: str, index: int, engines: dict[str, str] | None
              ) -> tuple[str, str]:
    """Run one shard as a deployment on the pool; return its flow run id and final state."""
    names = [f"{p.case.id}/{p.framework}" for p in pairs]
    budget_s = sum(p.deadlines.case_minutes for p in pairs) * 60 + 1800
    flow_run = run_deployment(SHARD_DEPLOYMENT, parameters={"config": config, "pairs": names, "run_id": run_id,
                                                                "engines": engines},
                              timeout=budget_s, tags=[f"shard-{index}"])
    state = flow_run.state.type.value if flow_run.state else "UNKNOWN"
    get_run_logger().info("shard %d (%s) ended %s", index, flow_run.name, state)
    return str(flow_run.id), state


def run_shards(config: str, pairs: list[Pair], shards: int, run_id: str, recorder: Recorder,
               hardware: str, engines: dict[str, str] | None) -> list[Outcome]:
    """Shards on the pool's workers, in parallel; pairs no shard stored are failed as `crashed`."""
    buckets = shard_pairs(pairs, shards)
    futures = [run_shard.submit(config, bucket, run_id, index, engines) for index, bucket in enumerate(buckets)]
    progress = RunProgress(len(pairs))
    # The shards store their results as they finish: this run's progress follows them from the database.
    while wait(futures, timeout=SHARD_PROGRESS_S).not_done:
        shard_progress(recorder, run_id, progress)
    ended = [future.result() for future in futures]
    recorder.flush()
    shard_progress(recorder, run_id, progress)
    stored = {(o.case_id, o.framework) for o in store.run_outcomes(recorder.engine(), run_id)
              if o.status not in UNFINISHED}
    for bucket, (flow_run_id, state) in zip(buckets, ended, strict=True):
        for pair in bucket:
            if (pair.case.id, pair.framework) not in stored:
                record = CaseRecord(pair, hardware)
                record.error = ShardLost(f"shard flow run {flow_run_id} ended {state} before storing this case")
                record_result(recorder, run_id, record.result())
                progress.case_finished(pair.case.id, pair.framework, "crashed")
    return store.run_outcomes(recorder.engine(), run_id)


def shard_progress(recorder: Recorder, run_id: str, progress: RunProgress) -> None:
    """Count the cases the shards have stored as finished; a database away now is asked again later."""
    try:
        outcomes = store.run_outcomes(recorder.engine(), run_id)
    except StorageUnavailable:
        return
    for outcome in outcomes:
        if outcome.status not in UNFINISHED:
            progress.case_finished(outcome.case_id, outcome.framework, outcome.error_class or outcome.status)


def effective_trigger(requested: RequestedTrigger, auto_scheduled: bool, pull_request: int | None) -> Trigger:
    """`schedule` exactly for the runs Prefect's scheduler created: no parameter makes a run nightly history.

    A run for a pull request is `pr` whatever else: its build never enters the nightly history.
    """
    if pull_request is not None:
        return "pr"
    if auto_scheduled:
        return "schedule"
    if requested == "schedule":
        get_run_logger().warning("trigger 'schedule' is for runs the nightly schedule created; this run is manual")
        return "manual"
    return requested


def run_name() -> str:
    """`nightly-2026-11-29` for the schedule, `pr-<number>` for a pull request, `adhoc-<label>` (or the time) for
    the rest: names to find runs by."""
    parameters = runtime.flow_run.parameters
    now = datetime.now(UTC)
    context = FlowRunContext.get()
    if parameters.get("pull_request") is not None:
        return f"pr-{parameters['pull_request']}"
    if context and context.flow_run and context.flow_run.auto_scheduled:
        return f"nightly-{now:%Y-%m-%d}"
    return f"adhoc-{parameters.get('label') or f'{now:%Y-%m-%d-%H%M}'}"


@flow(name="diffusion-comparison", flow_run_name=run_name, task_runner=ThreadPoolTaskRunner(max_workers=16))
def diffusion_comparison(
    config: str,
    cases: list[str] | None = None,
    frameworks: list[str] | None = None,
    label: str | None = None,
    trigger: RequestedTrigger = "manual",
    database_url: Annotated[str | None, Field(pattern=NO_PASSWORD_URL)] = None,
    shards: Annotated[int, Field(ge=1, le=64)] = 1,
    compare_to: Annotated[str, Field(min_length=1, max_length=64)] = LATEST_NIGHTLY,
    engines: dict[str, str] | None = None,
    pull_request: Annotated[int | None, Field(ge=1)] = None,
) -> dict[str, int]:
    """Measure the selected cases of `config` on their frameworks and render the dashboard.

    Args:
        config: Case matrix file (YAML or JSON, sglang's format accepted), or `demo` for the tiny models on
            the reference engine, built on the worker.
        cases: Case ids to run; all when empty.
        frameworks: Frameworks to run; all when empty.
        label: Free text shown on the dashboard, e.g. a release tag.
        trigger: `manual` or `api`, kept but labelled. Only a run Prefect's scheduler created is `schedule`
            (the nightly history), whatever this says.
        database_url: Results database without a password (refused: parameters are visible in the UI); default
            from DIFFBENCH_DATABASE_URL, else a local SQLite file.
        shards: Split the run over this many `diffusion-shard` flow runs on the pool's workers
            (cases of one model stay together); 1 measures everything here.
        compare_to: What each result is judged against (verdict `slower`, `faster` or `no change`, published as
            an artifact): `latest-nightly` (per series, the latest nightly before this run), a run id, or `none`.
        engines: Engine builds to run instead of the configured ones, per framework: `pip:<spec, wheel or -r
            lock>`, `image:<reference>` or `python:<path>` on the worker, e.g. {"sglang": "pip:sglang==0.5.24"}.
        pull_request: The pull request whose build this run measures: the run is named `pr-<number>`, judged
            against the nightly, and kept out of the nightly history, trends and alerts.
    """
    stop_servers_on_signals()
    context = FlowRunContext.get()
    trigger = effective_trigger(trigger, bool(context and context.flow_run and context.flow_run.auto_scheduled),
                                pull_request)
    settings = Settings(**({"database_url": public_url(database_url)} if database_url else {}))
    matrix = load_matrix(demo.matrix_path(config, settings.state_dir), engines)
    pairs = matrix.select(cases or None, frameworks or None)
    hardware = detect(settings.gpus)
    with Recorder(settings.database_url.get_secret_value(), settings.spool_dir) as recorder:
        check_baseline(recorder, compare_to)
        kept = measured_before(recorder)
        done = {(o.case_id, o.framework) for o in kept}
        pairs = [p for p in pairs if (p.case.id, p.framework) not in done]
        run = start_run(recorder, matrix, pairs, matrix.not_run(cases or None, frameworks or None), trigger, label,
                        hardware, settings, pull_request)
        try:
            if shards > 1:
                outcomes = run_shards(config, pairs, shards, run.id, recorder, hardware.gpu_model, engines)
            else:
                outcomes = kept + [r.outcome for r in measure_pairs(pairs, matrix, run.id, recorder, hardware,
                                                                    settings)]
        except BaseException as stop:  # Ctrl-C, SIGTERM, cancellation, a bug: the run says so, then Prefect does
            mark_stopped(recorder, run.id, stop)
            raise
        finish_run(recorder, run.id, outcomes)
        try:
            render_dashboard(recorder, run.id, settings.dashboard_dir, pull_request)
        except OSError as exc:  # the results are stored; `diffbench dashboard` renders them elsewhere
            get_run_logger().error("dashboard not written to %s: %s", settings.dashboard_dir, exc.strerror)
        if compare_to != NO_COMPARISON:
            try:
                publish_comparison(recorder, run.id, compare_to)
            except Exception:  # noqa: BLE001 - the results and dashboard stand; `diffbench compare` redoes it
                get_run_logger().exception("comparison not published")
        try:
            announce(recorder)
        except Exception:  # noqa: BLE001 - what was measured is stored; the next run announces what is left
            get_run_logger().exception("alerts not announced")
    outcomes = [o for o in outcomes if o.status != "not_run"]
    failed = [f"{o.case_id}/{o.framework}: {o.error_class}" for o in outcomes if o.status != "ok"]
    get_run_logger().info("%d of %d case(s) measured", len(outcomes) - len(failed), len(outcomes))
    if failed:
        raise CasesFailed(f"{len(failed)} case(s) failed: " + "; ".join(failed))
    return {"measured": len(outcomes)}
