"""Measuring a list of pairs on this host: one task per server group, side by side on the GPUs.

A group owns one server; each of its cases is measured by `measure_case` with its own request.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from diffbench import host_lock
from diffbench.cases import Pair
from diffbench.config import CaseMatrix
from diffbench.download import Download
from diffbench.engines import ENGINES
from diffbench.engines.environments import EngineEnvironment
from diffbench.errors import Cancelled, RequestTimeout, ServerError
from diffbench.gpus import CPU_SLOT, GpuPool, Hardware
from diffbench.groups import ServerGroup, server_groups
from diffbench.launcher import Server, stop_reason
from diffbench.measure import CaseRecord, Deadline, with_telemetry
from diffbench.media import input_image
from diffbench.packing import priority
from diffbench.results import CaseResult
from diffbench.settings import Settings
from diffbench.storage import store
from diffbench.storage.recorder import Recorder
from diffbench.telemetry import Sampler
from tasks.benchmark import benchmark
from tasks.canary import hardware_canary
from tasks.download import download_model
from tasks.environment import prepare_environment
from tasks.launch import launch_server
from tasks.perf_dump import collect_perf_dump
from tasks.progress import RunProgress
from tasks.record import record_result
from tasks.retry import RETRIES, is_retryable
from tasks.stop import stop_server
from tasks.throughput import measure_throughput
from tasks.warmup import warm_up

# Where a run's folder keeps its GPU timeline (`GpuPool.holds`).
TIMELINE = "gpu-timeline.json"
# How long a stopped run waits for its cases to store what they measured; their servers stop in 2 s.
STOP_WAIT_S = 4.0


@dataclass
class SharedServer:
    """What the cases of one group share: environment, model, GPUs and server, each got once.

    `failure` is set when getting one of them failed: every later case fails the same way
    instead of trying again. `served` are the results measured on the server running now: when
    it stops, each is given to `amend` again with the time its GPUs' memory took to come back.
    `suspect` is the night's canary's doubt about these GPUs.
    """

    group: ServerGroup
    run_id: str
    settings: Settings
    gpus: tuple[int, ...]
    amend: Callable[[CaseResult], None]
    idle_mb: dict[int, float] = field(default_factory=dict)
    image_source: str | None = None
    suspect: str | None = None
    failure: Exception | None = None
    environment: EngineEnvironment | None = None
    download: Download | None = None
    server: Server | None = None
    image: bytes | None = None
    served: list[CaseResult] = field(default_factory=list)
    restart: bool = False

    def ready(self, pair: Pair, deadline: Deadline) -> tuple[Download, Server]:
        """The group's model and a live server, got for the first case that needs them.

        Each case checks that the model holds what it needs (a ComfyUI case: its graph's files), so a
        case whose files are missing fails alone.
        """
        if self.failure is not None:
            raise self.failure.with_traceback(None)  # each case's own traceback, not every earlier one
        try:
            self.download = self.download or download_model(pair, self.settings)
        except Exception as exc:
            self.failure = exc
            raise
        ENGINES[pair.engine]().check_model(pair, Path(self.download.path))
        try:
            if self.server is not None and not self.server.alive:
                self.stop()  # its leader died; the rest of its process group may not have
            if self.server is None:
                workdir = self.settings.runs_dir / self.run_id / pair.framework / pair.case.id
                # The case it is launched for comes first: its name is on the server's labels and errors.
                group = (pair, *(p for p in self.group.pairs if p is not pair))
                self.server = launch_server(pair, group, self.download, self.environment, self.gpus, workdir,
                                            deadline, self.run_id)
        except Exception as exc:
            self.failure = exc
            raise
        return self.download, self.server

    def input_image(self) -> bytes:
        """The input image of image tasks, fetched inside the first case that needs it (once per group):
        a missing one fails only its cases."""
        self.image = self.image or fetch_input_image(self.image_source, self.settings)
        return self.image

    def stop(self) -> None:
        self.restart = False
        if self.server is not None:
            server, self.server = self.server, None
            released = stop_server(server, self.idle_mb)
            # Only a time at which every GPU read came back is a release time.
            seconds = released.seconds if self.gpus and self.idle_mb and not released.held_mb else None
            served, self.served = self.served, []
            for result in served:
                self.amend(replace(result, memory_release_s=seconds))


def measure_case(pair: Pair, shared: SharedServer, hardware: str,
                 progress: Callable[[CaseResult], None]) -> CaseResult:
    """Input → download → launch (once per group) → warm up → benchmark (GPU telemetry sampled) →
    perf dump → throughput block, for one case.

    `progress` gets the result so far after each measured request, so that a run killed halfway
    keeps what it measured.
    """
    record = CaseRecord(pair, hardware, shared.settings.host_label, suspect=shared.suspect)
    deadline = Deadline.for_case(pair)
    try:
        record.image = shared.input_image() if pair.case.needs_image else None
        record.download, record.server = shared.ready(pair, deadline)
        record.first_request_latency_s = next(iter(warm_up(record.server, pair, record.image, deadline)), None)
        with Sampler(record.server.spec.gpus) as sampler:
            benchmark(record.server, pair, record.image, record.samples, record.windows, deadline,
                      lambda: progress(record.result("running")))
        measured, record.telemetry = with_telemetry(record.samples, record.windows, sampler)
        record.samples = collect_perf_dump(record.server, pair, measured)
        record.throughput = measure_throughput(record.server, pair, record.image, deadline)
        # A request abandoned under load may still keep the server busy: the next case gets a new one.
        shared.restart = any(level.abandoned for level in record.throughput)
    except Exception as exc:  # noqa: BLE001 - one failing case must not stop the others
        reason = stop_reason()
        record.error = Cancelled(f"the run was stopped by {reason} during this case") if reason else exc
        record.download = record.download or shared.download
        # Out of memory, or still busy with an abandoned request: the next case gets a new server.
        shared.restart = isinstance(exc, ServerError | RequestTimeout)
    return record.result()


@task(task_run_name="{group.label}", cache_policy=NO_CACHE)
def measure_group(group: ServerGroup, run_id: str, recorder: Recorder, pool: GpuPool, image_source: str | None,
                  hardware: str, settings: Settings, progress: RunProgress,
                  estimate_s: float | None = None) -> list[CaseResult]:
    """Every case of `group` on one server, each stored as it finishes; the server always stopped.

    The engine's environment is got first, outside any case's time budget and before GPUs are taken:
    building a venv can take minutes. `estimate_s` (the group's last measured time) sets its turn.
    """
    environment, refusal = None, pool.refusal(group.num_gpus)
    try:
        environment = prepare_environment(group.first, settings)
    except Exception as exc:  # noqa: BLE001 - stored with every case of the group
        refusal = exc
    results: dict[str, CaseResult] = {}

    def keep(result: CaseResult) -> None:
        results[result.case_id] = result
        try:
            record_result(recorder, run_id, result)
        except Exception:  # noqa: BLE001 - a storage failure must not cost the other cases
            get_run_logger().exception("%s/%s: could not be stored", result.case_id, result.framework)
        progress.result_finished(result)

    with pool.take(0 if refusal else group.num_gpus, estimate_s, group.label) as gpus:
        suspect = "; ".join(pool.suspects[g] for g in (gpus or (CPU_SLOT,)) if g in pool.suspects) or None
        shared = SharedServer(group, run_id, settings, gpus, keep, pool.idle_mb, image_source, suspect,
                              failure=refusal, environment=environment)
        try:
            for pair in group.pairs:
                result = measure_case(pair, shared, hardware, lambda part: record_progress(recorder, run_id, part))
                keep(result)
                if shared.server is not None:
                    shared.served.append(result)
                if shared.restart:
                    shared.stop()
        finally:
            shared.stop()
    return list(results.values())


@task(task_run_name="fetch input image", cache_policy=NO_CACHE, retry_condition_fn=is_retryable, **RETRIES)
def fetch_input_image(source: str | None, settings: Settings) -> bytes:
    return input_image(source, settings.state_dir / "images")


def record_progress(recorder: Recorder, run_id: str, partial: CaseResult) -> None:
    """Store a case's samples so far; never at the cost of measuring, and not once the run is stopping."""
    if stop_reason() is None:
        try:
            recorder.record(run_id, partial)
        except Exception:  # noqa: BLE001 - the finished case is stored (or spooled) anyway
            get_run_logger().exception("%s/%s: progress not stored", partial.case_id, partial.framework)


def group_estimates(groups: list[ServerGroup], recorder: Recorder,
                    hardware: str) -> list[tuple[ServerGroup, float | None]]:
    """Each group with its expected seconds from earlier runs, in the order their turns come."""
    try:
        seconds = store.case_seconds(recorder.engine(), [k for g in groups for k in g.series_keys(hardware)])
    except Exception:  # noqa: BLE001 - an unreachable database costs the packing order, not the run
        get_run_logger().warning("no earlier durations (database unreachable): servers packed widest first")
        seconds = {}
    estimates = [(group, group.estimate_s(seconds, hardware)) for group in groups]
    estimates.sort(key=lambda item: priority(item[0].num_gpus, item[1]))
    get_run_logger().info("packing order: %s", "; ".join(
        f"{g.label} ({g.num_gpus} GPU, {'new' if s is None else f'{s:.0f} s'})" for g, s in estimates))
    return estimates


def canary_python(group: ServerGroup, settings: Settings) -> Path:
    """The interpreter of the first server's engine, whose torch the night's servers use; else diffbench's."""
    try:
        return prepare_environment(group.first, settings).python or Path(sys.executable)
    except Exception:  # noqa: BLE001 - its group reports the failure; the canary runs anyway
        return Path(sys.executable)


def write_timeline(pool: GpuPool, path: Path) -> None:
    """Which server held which GPUs when: the run's packing, for `diffbench` users and the GPU benchmark."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(hold) for hold in pool.holds], indent=1))


def measure_pairs(pairs: list[Pair], matrix: CaseMatrix, run_id: str, recorder: Recorder, hardware: Hardware,
                  settings: Settings) -> list[CaseResult]:
    """Every pair measured and recorded as it finishes; servers packed onto this host's GPUs.

    Measuring waits for the host's lock: a second run on the host would skew both.
    """
    logger = get_run_logger()
    me = {"run_id": run_id, "config": str(matrix.path), "user": getpass.getuser(), "pid": os.getpid(),
          "state_dir": str(settings.state_dir.resolve()), "since": datetime.now(UTC).isoformat(timespec="seconds")}

    def waiting(holder: dict[str, Any]) -> None:
        logger.warning("waiting for this host's measuring lock (%s), held by %s", settings.host_lock,
                       host_lock.describe(holder))

    with host_lock.measuring(settings.host_lock, me, waiting):
        pool = GpuPool(hardware.gpu_ids, settings.state_dir / "gpu-locks")
        estimates = group_estimates(server_groups(pairs), recorder, hardware.gpu_model)
        if estimates:
            pool.suspects = hardware_canary(hardware.gpu_ids or (CPU_SLOT,),
                                            canary_python(estimates[0][0], settings), settings.host_label, run_id,
                                            recorder)
        progress = RunProgress(len(pairs))
        # No Prefect timeout: on a worker thread it cannot interrupt anything; each case's deadline does.
        futures = [measure_group.submit(group, run_id, recorder, pool, matrix.matrix.test_image_url,
                                        hardware.gpu_model, settings, progress, estimate)
                   for group, estimate in estimates]
        try:
            return [result for future in futures for result in future.result()]
        except BaseException:
            # Stopped (Ctrl-C, SIGTERM): the servers are being stopped, so each group ends its case
            # and stores what it measured; waiting for that is short and bounded.
            wait(futures, timeout=STOP_WAIT_S)
            raise
        finally:
            write_timeline(pool, settings.runs_dir / run_id / TIMELINE)
