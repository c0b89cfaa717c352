"""The tables: runs, their per-(case, framework) results, samples and stage timings.

Portable between SQLite and Postgres: JSON columns, UTC timestamps, named constraints.
History: schema 1 (2026-11-24) is the first; 2 (2026-11-29) adds each result's request and names
a sample's peak memory `peak_reserved_mb`; 3 (2026-11-29) records the process that owns each run;
4 recomputes series keys without the engine build; 5 keeps the alerts already announced; 6 adds the
median's interval; 7 adds GPU telemetry, cost units, throughput, determinism, memory release and the
hardware canary.

A run's status is `running`, then `ok` or `failed`, or `cancelled` (stopped by a signal or from the UI)
or `crashed` (its process died, found by a later run on its host). A result's status is `pending` (not
started), `running` (samples so far), `ok`, `failed` or `not_run` (a framework diffbench has no adapter
for, or a case its engine cannot serve; `error_message` says which).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, ForeignKey, Index, MetaData, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from diffbench.media import THUMB_SIDE

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on databases with and without zones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value} given; diffbench stores UTC only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Run(Base):
    """One benchmark run, or one imported sglang result file."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    import_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(32))
    trigger: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200))
    baseline: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    host: Mapped[str] = mapped_column(String(200))
    gpu_model: Mapped[str] = mapped_column(String(200))
    driver: Mapped[str] = mapped_column(String(64))
    diffbench_version: Mapped[str] = mapped_column(String(32))
    engine_versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config_path: Mapped[str | None] = mapped_column(Text)
    config_sha256: Mapped[str | None] = mapped_column(String(64))
    # The diffbench process measuring it (pid and start time): gone while `running` means killed.
    owner_pid: Mapped[int | None]
    owner_started: Mapped[float | None]
    # The pull request a `pr` run measured the build of.
    pull_request: Mapped[int | None]

    results: Mapped[list[Result]] = relationship(back_populates="run", cascade="all, delete-orphan")


class Result(Base):
    """One (case, framework) in one run: summary, context and, if it failed, why."""

    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("run_id", "case_id", "framework", name="uq_results_run_case_framework"),
        CheckConstraint("median_s >= 0 AND min_s >= 0 AND max_s >= 0", name="latency_not_negative"),
        CheckConstraint("n >= 0", name="n_not_negative"),
        Index("ix_results_case_framework", "case_id", "framework"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[str] = mapped_column(String(200))
    framework: Mapped[str] = mapped_column(String(64))
    engine: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    error_class: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str | None] = mapped_column(Text)
    task: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(Text)
    model_revision: Mapped[str | None] = mapped_column(String(64))
    image_digest: Mapped[str | None] = mapped_column(String(200))
    engine_version: Mapped[str | None] = mapped_column(String(200))
    engine_build: Mapped[str | None] = mapped_column(Text)
    engine_packages: Mapped[str | None] = mapped_column(String(16))
    config_hash: Mapped[str] = mapped_column(String(16))
    series_key: Mapped[str] = mapped_column(String(16), index=True)
    methodology: Mapped[str] = mapped_column(String(64))
    hardware: Mapped[str] = mapped_column(String(200))
    host: Mapped[str | None] = mapped_column(String(200))
    num_gpus: Mapped[int]
    gpu_ids: Mapped[list[Any]] = mapped_column(default=list)
    serve_argv: Mapped[list[Any]] = mapped_column(default=list)
    # What was sent for this case, input images replaced by their hash.
    request: Mapped[dict[str, Any] | None]
    download_s: Mapped[float | None]
    ready_s: Mapped[float | None]
    first_request_latency_s: Mapped[float | None]
    n: Mapped[int] = mapped_column(default=0)
    median_s: Mapped[float | None]
    min_s: Mapped[float | None]
    max_s: Mapped[float | None]
    # Bootstrap 95 % interval of median_s (stats.median_interval); None with fewer than two samples.
    ci_low_s: Mapped[float | None]
    ci_high_s: Mapped[float | None]
    server_median_s: Mapped[float | None]
    step_median_ms: Mapped[float | None]
    # Cost units of the median (CaseResult's properties of the same names).
    ms_per_megapixel_step: Mapped[float | None]
    seconds_per_video_second: Mapped[float | None]
    joules_per_output: Mapped[float | None]
    # telemetry.Telemetry of the measured requests, and load.LoadLevel per concurrency level.
    telemetry: Mapped[dict[str, Any] | None]
    throughput: Mapped[list[Any]] = mapped_column(default=list)
    identical_outputs: Mapped[bool | None]
    output_spread: Mapped[float | None]
    memory_release_s: Mapped[float | None]
    suspect: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]

    run: Mapped[Run] = relationship(back_populates="results")
    samples: Mapped[list[SampleRow]] = relationship(back_populates="result", cascade="all, delete-orphan",
                                                    order_by="SampleRow.index")


class SampleRow(Base):
    """One measured request."""

    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("result_id", "index", name="uq_samples_result_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    index: Mapped[int]
    client_latency_s: Mapped[float]
    server_latency_s: Mapped[float | None]
    server_latency_source: Mapped[str] = mapped_column(String(16))
    peak_reserved_mb: Mapped[float | None]
    output_sha256: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None]
    height: Mapped[int | None]
    num_frames: Mapped[int | None]
    poll_bound_s: Mapped[float | None]
    perf_dump_missing: Mapped[bool] = mapped_column(default=False)
    denoise_step_ms: Mapped[list[Any]] = mapped_column(default=list)
    # media.thumbnail of the output, and whether its GPU throttled during the request (None: unknown).
    thumbnail: Mapped[str | None] = mapped_column(String(2 * THUMB_SIDE**2))
    throttled: Mapped[bool | None]

    result: Mapped[Result] = relationship(back_populates="samples")
    stages: Mapped[list[StageTiming]] = relationship(back_populates="sample", cascade="all, delete-orphan")


class StageTiming(Base):
    """Server-side time of one pipeline stage of one request."""

    __tablename__ = "stage_timings"
    __table_args__ = (UniqueConstraint("sample_id", "stage", name="uq_stage_timings_sample_stage"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(100))
    duration_ms: Mapped[float]

    sample: Mapped[SampleRow] = relationship(back_populates="stages")


class AlertRow(Base):
    """An alert already announced: its key names the change or failure streak it reported."""

    __tablename__ = "alerts"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    case_id: Mapped[str] = mapped_column(String(200))
    framework: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    announced_at: Mapped[datetime]


class CanaryRow(Base):
    """One GPU's canary before a run's measurements (gpu -1: the CPU of a host without GPUs)."""

    __tablename__ = "canaries"
    __table_args__ = (Index("ix_canaries_host_gpu", "host", "gpu"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    host: Mapped[str] = mapped_column(String(200))
    gpu: Mapped[int]
    device_name: Mapped[str] = mapped_column(String(200))
    matmul_tflops: Mapped[float]
    bandwidth_gbs: Mapped[float]
    seconds: Mapped[float]
    measured_at: Mapped[datetime]
    # Why this reading is well below the GPU's history (canary.judge); None when it is not.
    suspect: Mapped[str | None] = mapped_column(Text)
