"""The steps of measuring one (case, framework), free of any orchestration.

Each step takes a `Deadline`, so the case's time budget is enforced here rather than by
the orchestrator, whose task timeouts cannot interrupt a blocking call reliably.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diffbench import load, telemetry
from diffbench.cases import Case, Pair
from diffbench.client import Sample, describe, with_perf_dump
from diffbench.config import NotRun
from diffbench.download import Download
from diffbench.engines import ENGINES, ServerSpec
from diffbench.engines.environments import EngineEnvironment
from diffbench.errors import CaseTimeout, DiffbenchError, ServerError
from diffbench.launcher import Server, free_port
from diffbench.load import LoadLevel
from diffbench.results import METHODOLOGY, CaseResult, ResultStatus
from diffbench.stats import summarize
from diffbench.telemetry import Sampler, Telemetry


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


def launch(pairs: tuple[Pair, ...], download: Download, environment: EngineEnvironment, gpus: tuple[int, ...],
           workdir: Path, deadline: Deadline, run_id: str) -> Server:
    """Start one server for `pairs` (the first decides the launch) and wait until it is ready.

    Never leaves one running on failure.
    """
    pair = pairs[0]
    engine = ENGINES[pair.engine]()
    spec = ServerSpec(pair, pair.bind_host, free_port(engine.side_ports(pair)), download.path, gpus, pairs)
    server = Server.start(engine, spec, workdir, {"diffbench.run": run_id}, environment)
    try:
        server.wait_ready(min(pair.deadlines.ready_s, deadline.remaining("readiness")))
    except BaseException:
        server.stop()
        raise
    return server


def warm_up(server: Server, pair: Pair, image: bytes | None, deadline: Deadline) -> list[float]:
    """The engine's count of unmeasured requests at the measured shape (`Engine.warmup_requests`); their latencies."""
    return [server.generate(pair, image, deadline.remaining("warm-up")).client_latency_s
            for _ in range(server.engine.warmup_requests(pair))]


def enough(pair: Pair, samples: list[Sample], measuring_s: float) -> bool:
    """Whether `samples` complete the case: its fixed count, or for `auto` an interval narrow enough.

    `auto` measures at least `min_requests`, then stops once the bootstrap interval of the median
    is within `target` of it, or at `max_requests` or `max_seconds`, whichever comes first.
    """
    if pair.measurement_repeats != "auto":
        return len(samples) >= pair.measurement_repeats
    auto = pair.auto_repeats
    if len(samples) < auto.min_requests:
        return False
    if len(samples) >= auto.max_requests or measuring_s >= auto.max_seconds:
        return True
    summary = summarize([s.client_latency_s for s in samples])
    return summary is not None and summary.half_width is not None and summary.half_width <= auto.target


def benchmark(server: Server, pair: Pair, image: bytes | None, samples: list[Sample],
              windows: list[tuple[float, float]], deadline: Deadline,
              on_sample: Callable[[], None] = lambda: None) -> list[Sample]:
    """Measure `pair`'s case until `samples` is `enough`.

    `samples` is appended to as each request finishes, with its (start, end) on the monotonic
    clock in `windows`, and `on_sample` called, so a retry continues where a failed attempt
    stopped and a failure, or a kill, still leaves what was measured.
    """
    started = time.monotonic()
    while not enough(pair, samples, time.monotonic() - started):
        sent = time.monotonic()
        samples.append(server.generate(pair, image, deadline.remaining(f"request {len(samples) + 1}")))
        windows.append((sent, time.monotonic()))
        on_sample()
    return samples


def with_telemetry(samples: list[Sample], windows: list[tuple[float, float]],
                   sampler: Sampler) -> tuple[list[Sample], Telemetry]:
    """The samples flagged where their GPUs throttled, and the telemetry of their requests."""
    report = telemetry.summarize(sampler.points, windows, len(samples), sampler.absent)
    if not report.available:
        return samples, report
    return [replace(s, throttled=i in report.throttled_requests) for i, s in enumerate(samples)], report


def throughput(server: Server, pair: Pair, image: bytes | None, deadline: Deadline) -> list[LoadLevel]:
    """`pair`'s case under load at each concurrency level of its throughput block; [] without one.

    The levels stop at the case's deadline, keeping those measured; a server that dies fails the case.
    """
    block = pair.throughput
    if block is None:
        return []

    def send() -> float:
        return server.generate(pair, image, deadline.remaining("a throughput request")).client_latency_s

    levels: list[LoadLevel] = []
    for concurrency in load.concurrency_levels(block.max_concurrency):
        try:
            levels.append(load.level(send, concurrency, block.num_requests, block.request_rate))
        except CaseTimeout:
            break
    return levels


def collect_perf_dumps(server: Server, samples: list[Sample]) -> list[Sample]:
    """The samples with their server timings from the perf dumps, where the engine writes them."""
    return [with_perf_dump(server.engine, sample) for sample in samples]


@dataclass
class CaseRecord:
    """What is known about one (case, framework) so far; becomes a CaseResult at the end."""

    pair: Pair
    hardware: str
    host: str | None = None
    image: bytes | None = field(default=None, repr=False)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    download: Download | None = None
    server: Server | None = None
    first_request_latency_s: float | None = None
    samples: list[Sample] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)
    telemetry: Telemetry | None = None
    throughput: list[LoadLevel] = field(default_factory=list)
    suspect: str | None = None
    error: BaseException | None = None

    def result(self, status: ResultStatus | None = None) -> CaseResult:
        """The result so far; `status` (`pending`, `running`) marks one that is not finished."""
        pair, server, error = self.pair, self.server, self.error
        log_tail = error.log_tail if isinstance(error, ServerError) else None
        if error is not None and log_tail is None and server is not None:
            log_tail = server.log_tail()
        return CaseResult(
            case_id=pair.case.id, framework=pair.framework, engine=pair.engine,
            status=status or ("failed" if error is not None else "ok"), config_hash=pair.config_hash,
            methodology=METHODOLOGY,
            hardware=self.hardware, model=pair.model, num_gpus=pair.num_gpus, task=pair.case.task,
            started_at=self.started_at, finished_at=datetime.now(UTC), host=self.host,
            engine_version=server.engine_version if server else None, engine_build=pair.engine_build,
            engine_packages=server.engine_packages if server else None,
            model_revision=self.download.revision if self.download else pair.case.revision,
            image_digest=server.handle.image_digest if server else None,
            serve_argv=server.argv if server else [], gpu_ids=list(server.spec.gpus) if server else [],
            request=self.request(),
            download_s=self.download.seconds if self.download else None,
            ready_s=server.ready_s if server else None, first_request_latency_s=self.first_request_latency_s,
            samples=list(self.samples),
            error_class=_error_class(error), error_message=_error_message(error), log_tail=log_tail,
            num_inference_steps=pair.case.num_inference_steps, fps=pair.case.fps,
            telemetry=self.telemetry.to_json() if self.telemetry else None,
            throughput=[level.to_json() for level in self.throughput], suspect=self.suspect,
        )

    def request(self) -> dict[str, Any] | None:
        """What this case sends, as its server is asked (or would have been, had it started)."""
        pair, server = self.pair, self.server
        engine = server.engine if server else ENGINES[pair.engine]()
        model = server.spec.model_path if server else (self.download.path if self.download else pair.model)
        dump = server.case_dir(pair) / "perf-<request>.json" if server and engine.uses_perf_dump else None
        try:
            return describe(engine.request(pair, model, self.image, dump))
        except ValueError:
            return None  # an image task whose input image never arrived


def not_run_result(case: Case, framework: str, why: NotRun, hardware: str, host: str | None) -> CaseResult:
    """A (case, framework) of the config that is kept but not run (no adapter, or a case it cannot serve)."""
    now = datetime.now(UTC)
    controls = case.model_dump(mode="json", exclude={"id", "frameworks"}) | {"framework": framework}
    return CaseResult(
        case_id=case.id, framework=framework, engine=framework, status="not_run",
        config_hash=hashlib.sha256(json.dumps(controls, sort_keys=True).encode()).hexdigest()[:16],
        methodology=METHODOLOGY, hardware=hardware, model=case.model, num_gpus=case.num_gpus, task=case.task,
        started_at=now, finished_at=now, host=host, error_class=why.error_class, error_message=why.message,
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
