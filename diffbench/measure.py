"""The steps of measuring one (case, framework), free of any orchestration.

Each step takes a `Deadline`, so the case's time budget is enforced here rather than by
the orchestrator, whose task timeouts cannot interrupt a blocking call reliably.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from diffbench.cases import Pair
from diffbench.client import Sample
from diffbench.download import Download
from diffbench.engines import ENGINES, ServerSpec
from diffbench.errors import CaseTimeout, DiffbenchError, ServerError
from diffbench.launcher import Server, free_port
from diffbench.results import METHODOLOGY, CaseResult


@dataclass(frozen=True)
class Deadline:
    """The point on the monotonic clock by which a case must be finished."""

    at: float
    minutes: float

    @classmethod
    def for_case(cls, pair: Pair) -> Deadline:
        return cls(time.monotonic() + pair.deadlines.case_minutes * 60, pair.deadlines.case_minutes)

    def remaining(self, what: str) -> float:
        """Seconds left; raises CaseTimeout naming the step that found none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise CaseTimeout(f"case time budget of {self.minutes:g} min used up before {what}")
        return left


def launch(pair: Pair, download: Download, gpus: tuple[int, ...], workdir: Path, deadline: Deadline,
           run_id: str) -> Server:
    """Start a server for `pair` and wait until it is ready; never leaves one running on failure."""
    engine = ENGINES[pair.engine]()
    spec = ServerSpec(pair, pair.bind_host, free_port(engine.side_port_offsets), download.path, gpus)
    server = Server.start(engine, spec, workdir, {"diffbench.run": run_id})
    try:
        server.wait_ready(min(pair.deadlines.ready_s, deadline.remaining("readiness")))
    except BaseException:
        server.stop()
        raise
    return server


def warm_up(server: Server, pair: Pair, image: bytes | None, deadline: Deadline) -> list[float]:
    """`pair.warmup_requests` unmeasured requests at the measured shape; their client latencies."""
    return [server.generate(image, deadline.remaining("warm-up")).client_latency_s
            for _ in range(pair.warmup_requests)]


def benchmark(
    server: Server, pair: Pair, image: bytes | None, samples: list[Sample], deadline: Deadline
) -> list[Sample]:
    """Measure until `samples` holds `pair.measurement_repeats` samples.

    `samples` is appended to as each request finishes, so a retry continues where a failed
    attempt stopped and a failure still leaves what was measured.
    """
    while len(samples) < pair.measurement_repeats:
        samples.append(server.generate(image, deadline.remaining(f"request {len(samples) + 1}")))
    return samples


@dataclass
class CaseRecord:
    """What is known about one (case, framework) so far; becomes a CaseResult at the end."""

    pair: Pair
    hardware: str
    host: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    download: Download | None = None
    server: Server | None = None
    first_request_latency_s: float | None = None
    samples: list[Sample] = field(default_factory=list)
    error: BaseException | None = None

    def result(self) -> CaseResult:
        pair, server, error = self.pair, self.server, self.error
        log_tail = error.log_tail if isinstance(error, ServerError) else None
        if error is not None and log_tail is None and server is not None:
            log_tail = server.log_tail()
        return CaseResult(
            case_id=pair.case.id, framework=pair.framework, engine=pair.engine,
            status="failed" if error is not None else "ok", config_hash=pair.config_hash, methodology=METHODOLOGY,
            hardware=self.hardware, model=pair.model, num_gpus=pair.num_gpus, task=pair.case.task,
            started_at=self.started_at, finished_at=datetime.now(UTC), host=self.host,
            engine_version=ENGINES[pair.engine]().installed_version(),
            model_revision=self.download.revision if self.download else pair.case.revision,
            image_digest=server.handle.image_digest if server else None,
            serve_argv=server.argv if server else [], gpu_ids=list(server.spec.gpus) if server else [],
            download_s=self.download.seconds if self.download else None,
            ready_s=server.ready_s if server else None, first_request_latency_s=self.first_request_latency_s,
            samples=list(self.samples),
            error_class=_error_class(error), error_message=_error_message(error), log_tail=log_tail,
        )


def _error_class(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return error.error_class if isinstance(error, DiffbenchError) else "internal"


def _error_message(error: BaseException | None) -> str | None:
    if error is None:
        return None
    summary = error.summary if isinstance(error, ServerError) else str(error)
    return f"{type(error).__name__}: {summary}"
