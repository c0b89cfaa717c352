"""What one (case, framework) produced in one run: plain data, stored and rendered."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from diffbench.client import Sample
from diffbench.stats import Summary, summarize

# How latency is measured; a new way of measuring gets a new name and its own series.
METHODOLOGY = "diffbench-client-e2e-v1"
Trigger = Literal["schedule", "manual", "api"]
ResultStatus = Literal["ok", "failed", "not_run", "pending", "running"]
# Results a stopped run leaves unfinished.
UNFINISHED = ("pending", "running")


def series_key(config_hash: str, engine: str, hardware: str, methodology: str) -> str:
    """Results with the same key are comparable: same case config, engine, hardware and method.

    The engine's build (version, image digest) is not part of it: it is what a series watches change.
    """
    return hashlib.sha256(json.dumps([config_hash, engine, hardware, methodology]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunInfo:
    """One benchmark run: who started it, where, with what."""

    id: str
    trigger: Trigger
    started_at: datetime
    host: str
    gpu_model: str
    driver: str
    diffbench_version: str
    label: str | None = None
    baseline: str | None = None
    flow_run_id: str | None = None
    config_path: str | None = None
    config_sha256: str | None = None
    source: str = "diffbench"
    import_key: str | None = None
    owner_pid: int | None = None
    owner_started: float | None = None


@dataclass(frozen=True)
class Outcome:
    """The verdict of one (case, framework), all a run needs to finish."""

    case_id: str
    framework: str
    status: str
    error_class: str | None
    engine_version: str | None


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one (case, framework): its measurements, or why there are none."""

    case_id: str
    framework: str
    engine: str
    status: ResultStatus
    config_hash: str
    methodology: str
    hardware: str
    model: str
    num_gpus: int
    task: str
    started_at: datetime
    finished_at: datetime
    host: str | None = None
    engine_version: str | None = None
    model_revision: str | None = None
    image_digest: str | None = None
    serve_argv: list[str] = field(default_factory=list)
    request: dict[str, Any] | None = None
    gpu_ids: list[int] = field(default_factory=list)
    download_s: float | None = None
    ready_s: float | None = None
    first_request_latency_s: float | None = None
    samples: list[Sample] = field(default_factory=list)
    error_class: str | None = None
    error_message: str | None = None
    log_tail: str | None = None

    @property
    def series_key(self) -> str:
        return series_key(self.config_hash, self.engine, self.hardware, self.methodology)

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.case_id, self.framework, self.status, self.error_class, self.engine_version)

    @property
    def client(self) -> Summary | None:
        return summarize([s.client_latency_s for s in self.samples])

    @property
    def server(self) -> Summary | None:
        return summarize([s.server_latency_s for s in self.samples if s.server_latency_s is not None])
