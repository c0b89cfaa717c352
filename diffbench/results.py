"""What one (case, framework) produced in one run: plain data, stored and rendered."""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from diffbench import media
from diffbench.cases import VIDEO_TASKS
from diffbench.client import Sample
from diffbench.stats import Summary, summarize

# How latency is measured; a new way of measuring gets a new name and its own series. v1 stopped the
# clock once the output was decoded and checked; v2 stops it at the output's last byte, as sglang's
# client-e2e-v1 does ("output downloaded"), and decodes and checks after.
METHODOLOGY = "diffbench-client-e2e-v2"
# `pr`: a pull request's build, judged against the nightly; never part of the nightly history or trends.
Trigger = Literal["schedule", "manual", "api", "pr"]
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
    pull_request: int | None = None


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
    # `Pair.engine_build`: the pip spec, Python environment or image the engine came from.
    engine_build: str | None = None
    # A hash of the engine environment's frozen package list (`EngineEnvironment.packages_sha256`).
    engine_packages: str | None = None
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
    # The case's steps and frame rate as asked (None: the model's default), for cost units.
    num_inference_steps: int | None = None
    fps: int | None = None
    # `telemetry.Telemetry.to_json()` of the measured requests; None where none was sampled.
    telemetry: dict[str, Any] | None = None
    # `load.LoadLevel.to_json()` per concurrency level of the throughput block.
    throughput: list[dict[str, Any]] = field(default_factory=list)
    # Seconds from stopping the case's server until its GPUs' memory was back to idle.
    memory_release_s: float | None = None
    # Why the night's canary doubts the case's GPUs; such a result is never compared.
    suspect: str | None = None

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

    @property
    def steps(self) -> int | None:
        """Denoising steps: as asked, else as the server reported them."""
        reported = next((len(s.denoise_step_ms) for s in self.samples if s.denoise_step_ms), None)
        return self.num_inference_steps or reported

    @property
    def step_median_ms(self) -> float | None:
        """Median server time of one denoising step, over every step of every measured request."""
        steps = [ms for s in self.samples for ms in s.denoise_step_ms]
        return statistics.median(steps) if steps else None

    @property
    def ms_per_megapixel_step(self) -> float | None:
        """Client milliseconds per megapixel per step (per frame too, for a video): comparable across shapes."""
        client, steps = self.client, self.steps
        if client is None or not steps:
            return None
        sample = self.samples[0]
        megapixels = sample.width * sample.height * max(sample.num_frames, 1) / 1e6
        return client.median * 1000 / (megapixels * steps)

    @property
    def seconds_per_video_second(self) -> float | None:
        """Client seconds per second of video made (1 = real time)."""
        client = self.client
        if client is None or self.task not in VIDEO_TASKS or not self.fps:
            return None
        return client.median / (self.samples[0].num_frames / self.fps)

    @property
    def joules_per_output(self) -> float | None:
        return (self.telemetry or {}).get("energy_j_per_output")

    @property
    def identical_outputs(self) -> bool | None:
        """Whether every measured request (one seed) gave the same bytes; None with fewer than two."""
        if len(self.samples) < 2:
            return None
        return len({s.output_sha256 for s in self.samples}) == 1

    @property
    def output_spread(self) -> float | None:
        """Largest picture distance (`media.distance`) of any request's output from the first one's."""
        thumbs = [s.thumbnail for s in self.samples if s.thumbnail]
        if len(thumbs) < 2:
            return None
        return max(media.distance(thumbs[0], t) for t in thumbs[1:])
