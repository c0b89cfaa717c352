"""The diffusion comparison: every case on every framework, stored as it finishes, then the dashboard."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from diffbench.cases import Pair
from diffbench.config import load_matrix
from diffbench.errors import ShardLost
from diffbench.gpus import detect
from diffbench.launcher import stop_servers_on_termination
from diffbench.measure import CaseRecord
from diffbench.results import Outcome, Trigger
from diffbench.settings import Settings
from diffbench.sharding import shard_pairs
from diffbench.storage import store
from diffbench.storage.recorder import Recorder
from diffbench.storage.store import public_url
from flows.measure import measure_pairs
from flows.shard import SHARD_DEPLOYMENT
from tasks.dashboard import render_dashboard
from tasks.record import finish_run, record_result, start_run


class CasesFailed(Exception):
    """Raised at the very end, after everything measured was stored and rendered."""


@task(task_run_name="shard {index}", cache_policy=NO_CACHE)
def run_shard(config: str, pairs: list[Pair], run_id: str, index: int) -> tuple[str, str]:
    """Run one shard as a deployment on the pool; return its flow run id and final state."""
    names = [f"{p.case.id}/{p.framework}" for p in pairs]
    budget_s = sum(p.deadlines.case_minutes for p in pairs) * 60 + 1800
    flow_run = run_deployment(SHARD_DEPLOYMENT, parameters={"config": config, "pairs": names, "run_id": run_id},
                              timeout=budget_s, tags=[f"shard-{index}"])
    state = flow_run.state.type.value if flow_run.state else "UNKNOWN"
    get_run_logger().info("shard %d (%s) ended %s", index, flow_run.name, state)
    return str(flow_run.id), state


def run_shards(config: str, pairs: list[Pair], shards: int, run_id: str, recorder: Recorder,
               hardware: str) -> list[Outcome]:
    """Shards on the pool's workers, in parallel; pairs no shard stored are failed as `crashed`."""
    buckets = shard_pairs(pairs, shards)
    futures = [run_shard.submit(config, bucket, run_id, index) for index, bucket in enumerate(buckets)]
    ended = [future.result() for future in futures]
    recorder.flush()
    stored = {(o.case_id, o.framework) for o in store.run_outcomes(recorder.engine(), run_id)}
    for bucket, (flow_run_id, state) in zip(buckets, ended, strict=True):
        for pair in bucket:
            if (pair.case.id, pair.framework) not in stored:
                record = CaseRecord(pair, hardware)
                record.error = ShardLost(f"shard flow run {flow_run_id} ended {state} before storing this case")
                record_result(recorder, run_id, record.result())
    return store.run_outcomes(recorder.engine(), run_id)


@flow(name="diffusion-comparison", task_runner=ThreadPoolTaskRunner(max_workers=16))
def diffusion_comparison(
    config: str,
    cases: list[str] | None = None,
    frameworks: list[str] | None = None,
    label: str | None = None,
    trigger: Trigger = "manual",
    database_url: str | None = None,
    shards: Annotated[int, Field(ge=1, le=64)] = 1,
) -> dict[str, int]:
    """Measure the selected cases of `config` on their frameworks and render the dashboard.

    Args:
        config: Case matrix file (YAML or JSON, sglang's format accepted).
        cases: Case ids to run; all when empty.
        frameworks: Frameworks to run; all when empty.
        label: Free text shown on the dashboard, e.g. a release tag.
        trigger: `schedule` for the nightly history; `manual` and `api` runs are kept but labelled.
        database_url: Results database without a password (parameters are visible in the UI); default
            from DIFFBENCH_DATABASE_URL, else a local SQLite file.
        shards: Split the run over this many `diffusion-shard` flow runs on the pool's workers
            (cases of one model stay together); 1 measures everything here.
    """
    stop_servers_on_termination()
    settings = Settings(**({"database_url": public_url(database_url)} if database_url else {}))
    matrix = load_matrix(config)
    pairs = matrix.select(cases or None, frameworks or None)
    for case_id, framework in matrix.unsupported:
        if (not cases or case_id in cases) and (not frameworks or framework in frameworks):
            get_run_logger().warning("%s/%s: not run, diffbench has no adapter for %s", case_id, framework, framework)
    hardware = detect(settings.gpus)
    with Recorder(settings.database_url.get_secret_value(), settings.spool_dir) as recorder:
        run = start_run(recorder, matrix, trigger, label, hardware, settings.state_dir)
        if shards > 1:
            outcomes = run_shards(config, pairs, shards, run.id, recorder, hardware.gpu_model)
        else:
            outcomes = [r.outcome for r in measure_pairs(pairs, matrix, run.id, recorder, hardware, settings)]
        finish_run(recorder, run.id, outcomes)
        render_dashboard(recorder, run.id, settings.dashboard_dir)
    failed = [f"{o.case_id}/{o.framework}: {o.error_class}" for o in outcomes if o.status != "ok"]
    get_run_logger().info("%d of %d case(s) measured", len(outcomes) - len(failed), len(outcomes))
    if failed:
        raise CasesFailed(f"{len(failed)} case(s) failed: " + "; ".join(failed))
    return {"measured": len(outcomes)}
