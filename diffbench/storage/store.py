"""Queries. Each takes the database handle as its first argument; nothing is global.

SQLAlchemy's connection errors are translated here into StorageUnavailable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, create_engine, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, aliased

from diffbench.alerts import Alert
from diffbench.canary import CanaryReading
from diffbench.compare import Measured
from diffbench.errors import ConfigError, RunNotStored, StorageUnavailable
from diffbench.regressions import Point
from diffbench.results import UNFINISHED, CaseResult, Outcome, RunInfo
from diffbench.storage import migrate
from diffbench.storage.models import AlertRow, CanaryRow, Result, Run, SampleRow, StageTiming

ERROR_MESSAGE_LIMIT = 4000
LOG_TAIL_LIMIT = 8000
# How many earlier canary readings of a GPU its new one is judged against.
CANARY_HISTORY = 10


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


# A URL whose user, if any, has no password: all a parameter, which anyone who sees the run can
# read, may hold. A JSON-schema pattern, so the Prefect server refuses the run before creating it.
NO_PASSWORD_URL = r"^[A-Za-z][A-Za-z0-9+.-]*://([^:@/]*@)?[^@/]*(/.*)?$"


def public_url(url: str) -> str:
    """`url` if it holds no password; one that does belongs in DIFFBENCH_DATABASE_URL, not in a parameter."""
    if make_url(url).password:
        raise ConfigError([f"database_url: {redacted(url)} carries a password, which would show wherever the "
                           "parameter does; set it in DIFFBENCH_DATABASE_URL on the worker instead"])
    return url


@contextmanager
def reachable(url: str) -> Iterator[None]:
    """Turn a lost or refused database connection into StorageUnavailable."""
    try:
        yield
    except OperationalError as exc:
        raise StorageUnavailable(f"database {redacted(url)} unavailable: {type(exc.orig).__name__}") from exc


def open_database(url: str) -> Engine:
    """An engine on `url`, migrated to the newest schema; a SQLite file's folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, pool_pre_ping=True)
    with reachable(url):
        migrate.upgrade(engine)
    return engine


def save_run(engine: Engine, run: RunInfo) -> None:
    """Insert the run. One already there from another process (a retried flow run) runs again, its results
    kept; the same process opening it again (a spooled write replayed) changes nothing."""
    with reachable(str(engine.url)), Session(engine) as session, session.begin():
        stored = session.get(Run, run.id)
        if stored is None:
            session.add(Run(**asdict(run), status="running", engine_versions={}))
        elif (stored.owner_pid, stored.owner_started) != (run.owner_pid, run.owner_started):
            stored.status, stored.finished_at = "running", None
            stored.owner_pid, stored.owner_started = run.owner_pid, run.owner_started


def finish_run(
    engine: Engine, run_id: str, status: str, finished_at: datetime, engine_versions: dict[str, str]
) -> None:
    with reachable(str(engine.url)), Session(engine) as session, session.begin():
        session.execute(update(Run).where(Run.id == run_id).values(
            status=status, finished_at=finished_at, engine_versions=engine_versions))


def stop_run(engine: Engine, run_id: str, status: str, reason: str, finished_at: datetime) -> bool:
    """Mark a run that stopped before its end `cancelled` or `crashed`, with every unfinished result.

    Samples stored before the stop are kept. A run that already ended stays as it is; returns
    whether this one was still running.
    """
    with reachable(str(engine.url)), Session(engine) as session, session.begin():
        run = session.get(Run, run_id)
        if run is None or run.status != "running":
            return False
        run.status, run.finished_at = status, finished_at
        for result in session.scalars(select(Result).where(Result.run_id == run_id, Result.status.in_(UNFINISHED))):
            kept = f"; its {result.n} measured sample(s) are kept" if result.n else ""
            result.status, result.error_class, result.finished_at = "failed", status, finished_at
            result.error_message = f"{reason}{kept}"
        return True


def running_runs(engine: Engine, host: str) -> list[tuple[str, int | None, float | None]]:
    """Runs of `host` still marked running: id, owner pid and owner start time."""
    query = select(Run.id, Run.owner_pid, Run.owner_started).where(Run.status == "running", Run.host == host,
                                                                    Run.source == "diffbench")
    with reachable(str(engine.url)), Session(engine) as session:
        return [tuple(row) for row in session.execute(query)]


def _result_row(run_id: str, result: CaseResult) -> Result:
    client, server = result.client, result.server
    row = Result(
        run_id=run_id, case_id=result.case_id, framework=result.framework, engine=result.engine,
        status=result.status, error_class=result.error_class,
        error_message=(result.error_message or "")[-ERROR_MESSAGE_LIMIT:] or None,
        log_tail=(result.log_tail or "")[-LOG_TAIL_LIMIT:] or None,
        task=result.task, model=result.model, model_revision=result.model_revision, image_digest=result.image_digest,
        engine_version=result.engine_version, engine_build=result.engine_build,
        engine_packages=result.engine_packages, config_hash=result.config_hash,
        series_key=result.series_key,
        methodology=result.methodology, hardware=result.hardware, host=result.host, num_gpus=result.num_gpus,
        gpu_ids=result.gpu_ids, serve_argv=result.serve_argv, request=result.request, download_s=result.download_s,
        ready_s=result.ready_s, first_request_latency_s=result.first_request_latency_s,
        n=client.n if client else 0, median_s=client.median if client else None,
        min_s=client.min if client else None, max_s=client.max if client else None,
        ci_low_s=client.low if client else None, ci_high_s=client.high if client else None,
        server_median_s=server.median if server else None,
        step_median_ms=result.step_median_ms,
        ms_per_megapixel_step=result.ms_per_megapixel_step, seconds_per_video_second=result.seconds_per_video_second,
        joules_per_output=result.joules_per_output, telemetry=result.telemetry, throughput=result.throughput,
        identical_outputs=result.identical_outputs, output_spread=result.output_spread,
        memory_release_s=result.memory_release_s, suspect=result.suspect,
        started_at=result.started_at, finished_at=result.finished_at,
    )
    for index, sample in enumerate(result.samples):
        row.samples.append(SampleRow(
            index=index, client_latency_s=sample.client_latency_s, server_latency_s=sample.server_latency_s,
            server_latency_source=sample.server_latency_source, peak_reserved_mb=sample.peak_reserved_mb,
            output_sha256=sample.output_sha256, width=sample.width, height=sample.height,
            num_frames=sample.num_frames, poll_bound_s=sample.poll_bound_s,
            perf_dump_missing=sample.perf_dump_missing, denoise_step_ms=list(sample.denoise_step_ms),
            thumbnail=sample.thumbnail or None, throttled=sample.throttled,
            stages=[StageTiming(stage=name, duration_ms=ms) for name, ms in sample.stage_ms.items()],
        ))
    return row


def save_results(engine: Engine, run_id: str, results: list[CaseResult]) -> None:
    """Write results in one transaction, replacing any a retry wrote before for the same (case, framework)."""
    with reachable(str(engine.url)), Session(engine) as session, session.begin():
        for result in results:
            existing = session.scalars(select(Result).where(
                Result.run_id == run_id, Result.case_id == result.case_id, Result.framework == result.framework))
            for old in existing:
                session.delete(old)
        session.flush()
        session.add_all(_result_row(run_id, result) for result in results)


def save_result(engine: Engine, run_id: str, result: CaseResult) -> None:
    save_results(engine, run_id, [result])


def run_outcomes(engine: Engine, run_id: str) -> list[Outcome]:
    """What is stored for a run, one verdict per (case, framework)."""
    query = select(Result.case_id, Result.framework, Result.status, Result.error_class, Result.engine_version).where(
        Result.run_id == run_id).order_by(Result.id)
    with reachable(str(engine.url)), Session(engine) as session:
        return [Outcome(*row) for row in session.execute(query)]


def import_exists(engine: Engine, import_key: str) -> bool:
    with reachable(str(engine.url)), Session(engine) as session:
        return session.scalar(select(Run.id).where(Run.import_key == import_key)) is not None


RESULT_COLUMNS = [
    Result.run_id, Run.started_at, Run.trigger, Run.label, Run.baseline, Run.source, Run.host, Run.gpu_model,
    Run.driver, Run.diffbench_version, Run.engine_versions, Run.status.label("run_status"), Run.pull_request,
    Result.case_id, Result.framework, Result.engine, Result.status, Result.error_class,
    Result.median_s, Result.min_s, Result.max_s, Result.ci_low_s, Result.ci_high_s, Result.n, Result.server_median_s,
    Result.download_s, Result.ready_s, Result.first_request_latency_s, Result.step_median_ms,
    Result.ms_per_megapixel_step,
    Result.seconds_per_video_second, Result.joules_per_output, Result.telemetry, Result.throughput,
    Result.identical_outputs, Result.output_spread, Result.memory_release_s, Result.suspect,
    # The first output's thumbnail: outputs of engines are compared by picture, not by hash.
    select(SampleRow.thumbnail).where(SampleRow.result_id == Result.id, SampleRow.index == 0)
    .scalar_subquery().label("thumbnail"),
    Result.config_hash, Result.series_key, Result.methodology, Result.num_gpus, Result.engine_version,
    Result.engine_build, Result.engine_packages,
    Result.model, Result.task, Result.host,
]


def nightly_points(engine: Engine, case_id: str | None = None,
                   framework: str | None = None) -> dict[tuple[str, str], list[Point]]:
    """Each (case, framework)'s measured nightly results, oldest first, with every client latency.

    Results the night's canary doubts are left out: a slow GPU is not a slower engine.
    """
    where = [Run.trigger == "schedule", Result.status == "ok", Result.suspect.is_(None)]
    where += [Result.case_id == case_id] if case_id is not None else []
    where += [Result.framework == framework] if framework is not None else []
    results = (select(Result.id, Result.case_id, Result.framework, Result.run_id, Run.started_at, Result.series_key,
                      Result.engine_version).join(Run, Run.id == Result.run_id).where(*where)
               .order_by(Run.started_at, Result.id))
    latencies = (select(SampleRow.result_id, SampleRow.client_latency_s).join(Result).join(Run).where(*where)
                 .order_by(SampleRow.result_id, SampleRow.index))
    samples: dict[int, list[float]] = {}
    with reachable(str(engine.url)), Session(engine) as session:
        rows = session.execute(results).all()
        for result_id, latency in session.execute(latencies):
            samples.setdefault(result_id, []).append(latency)
    points: dict[tuple[str, str], list[Point]] = {}
    for result_id, case, fw, run_id, started_at, series, version in rows:
        if samples.get(result_id):
            points.setdefault((case, fw), []).append(
                Point(run_id, started_at, series, tuple(samples[result_id]), version))
    return points


def _measured(session: Session, where: list[Any], latest_per_series: bool = False) -> list[Measured]:
    """Results matching `where` with every client latency, newest run first; with `latest_per_series`,
    only the newest of each series (its samples alone are read)."""
    rows = session.execute(
        select(Result.id, Result.run_id, Result.case_id, Result.framework, Result.status, Result.series_key,
               Result.engine_version).join(Run, Run.id == Result.run_id).where(*where)
        .order_by(Run.started_at.desc(), Result.id)).all()
    if latest_per_series:
        rows = list({row.series_key: row for row in reversed(rows)}.values())
    samples: dict[int, list[float]] = {}
    query = (select(SampleRow.result_id, SampleRow.client_latency_s)
             .where(SampleRow.result_id.in_([row[0] for row in rows])).order_by(SampleRow.result_id, SampleRow.index))
    for result_id, latency in session.execute(query):
        samples.setdefault(result_id, []).append(latency)
    return [Measured(*row[1:], tuple(samples.get(row[0], ()))) for row in rows]


def _stored_run(session: Session, engine: Engine, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise RunNotStored(f"no run {run_id!r} is stored in {redacted(str(engine.url))}")
    return run


def run_measured(engine: Engine, run_id: str) -> list[Measured]:
    """Every result of a run, with its samples; raises RunNotStored when no such run is stored."""
    with reachable(str(engine.url)), Session(engine) as session:
        _stored_run(session, engine, run_id)
        return _measured(session, [Result.run_id == run_id])


def latest_nightlies(engine: Engine, run_id: str) -> dict[str, Measured]:
    """Per series of `run_id`'s results, the latest measured nightly result that started before it."""
    with reachable(str(engine.url)), Session(engine) as session:
        run = _stored_run(session, engine, run_id)
        own = aliased(Result)  # not correlated with the outer query's results
        keys = select(own.series_key).where(own.run_id == run_id)
        found = _measured(session, [Result.series_key.in_(keys), Run.trigger == "schedule", Run.id != run_id,
                                    Run.started_at < run.started_at, Result.status == "ok",
                                    Result.suspect.is_(None)], latest_per_series=True)
    return {measured.series_key: measured for measured in found}


def save_canaries(engine: Engine, run_id: str, readings: list[dict[str, Any]]) -> None:
    """A run's canary readings: `CanaryReading` fields plus `suspect` and `measured_at` (ISO)."""
    rows = [CanaryRow(run_id=run_id, **(r | {"measured_at": datetime.fromisoformat(r["measured_at"])}))
            for r in readings]
    with reachable(str(engine.url)), Session(engine) as session, session.begin():
        session.add_all(rows)


def canary_history(engine: Engine, host: str, gpus: list[int], limit: int = CANARY_HISTORY) -> list[CanaryReading]:
    """The latest `limit` canary readings of each of `host`'s `gpus`, oldest first."""
    history: list[CanaryReading] = []
    with reachable(str(engine.url)), Session(engine) as session:
        for gpu in gpus:
            # A suspect reading is not a new normal: a GPU that stays slow stays suspect.
            rows = session.scalars(select(CanaryRow).where(CanaryRow.host == host, CanaryRow.gpu == gpu,
                                                           CanaryRow.suspect.is_(None))
                                   .order_by(CanaryRow.measured_at.desc()).limit(limit)).all()
            history += [CanaryReading(r.host, r.gpu, r.device_name, r.matmul_tflops, r.bandwidth_gbs, r.seconds)
                        for r in reversed(rows)]
    return history


def case_seconds(engine: Engine, series_keys: list[str]) -> dict[str, float]:
    """Each series' latest measured case: seconds from its start (download, launch) to its result."""
    latest = (select(Result.series_key, func.max(Result.id).label("id")).where(
        Result.series_key.in_(series_keys), Result.status == "ok").group_by(Result.series_key).subquery())
    query = select(Result.series_key, Result.started_at, Result.finished_at).join(latest, latest.c.id == Result.id)
    with reachable(str(engine.url)), Session(engine) as session:
        return {key: (finished - started).total_seconds() for key, started, finished in session.execute(query)}


def claim_alerts(engine: Engine, alerts: list[Alert]) -> list[Alert]:
    """The alerts not announced before, recorded as announced now."""
    with reachable(str(engine.url)), Session(engine) as session, session.begin():
        known = set(session.scalars(select(AlertRow.key).where(AlertRow.key.in_([a.key for a in alerts]))))
        new = [alert for alert in alerts if alert.key not in known]
        session.add_all(AlertRow(key=a.key, kind=a.kind, case_id=a.case_id, framework=a.framework, run_id=a.run_id,
                                 message=a.message, announced_at=datetime.now(UTC)) for a in new)
    return new


def results_frame(engine: Engine, case_ids: list[str] | None = None) -> pd.DataFrame:
    """Every result with its run's context, oldest first, as one DataFrame."""
    query = select(*RESULT_COLUMNS).join(Run, Run.id == Result.run_id).order_by(Run.started_at, Result.id)
    if case_ids is not None:
        query = query.where(Result.case_id.in_(case_ids))
    with reachable(str(engine.url)), engine.connect() as connection:
        frame = pd.read_sql(query, connection)
    frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
    return frame


def counts(engine: Engine) -> dict[str, Any]:
    """Row counts per table, for checks and messages."""
    with reachable(str(engine.url)), Session(engine) as session:
        return {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Run, Result, SampleRow, StageTiming)}
