"""Measuring a list of pairs on this host: one task per server group, side by side on the GPUs."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from diffbench.cases import Pair
from diffbench.config import CaseMatrix
from diffbench.gpus import GpuPool, Hardware
from diffbench.groups import ServerGroup, server_groups
from diffbench.measure import CaseRecord, Deadline
from diffbench.media import input_image
from diffbench.results import CaseResult
from diffbench.settings import Settings
from diffbench.storage.recorder import Recorder
from tasks.benchmark import benchmark
from tasks.download import download_model
from tasks.launch import launch_server
from tasks.perf_dump import collect_perf_dump
from tasks.record import record_result
from tasks.stop import stop_server
from tasks.warmup import warm_up


@task(task_run_name="{group.label}", cache_policy=NO_CACHE)
def measure_group(group: ServerGroup, run_id: str, recorder: Recorder, pool: GpuPool, image: bytes | None,
                  hardware: str, settings: Settings) -> list[CaseResult]:
    """Download → launch → warm up → benchmark → perf dump per case, on one server; stop always."""
    results, download, server = [], None, None
    sticky: Exception | None = pool.refusal(group.num_gpus)  # a download, launch or host failure, for all cases
    with pool.take(0 if sticky else group.num_gpus) as gpus:
        try:
            for pair in group.pairs:
                record, deadline = CaseRecord(pair, hardware, settings.host_label), Deadline.for_case(pair)
                try:
                    if sticky is not None:
                        raise sticky
                    download = download or download_model(pair, settings)
                    record.download = download
                    if server is not None and not server.alive:
                        stop_server(server)  # its leader died; the rest of its process group may not have
                        server = None
                    if server is None:
                        workdir = settings.runs_dir / run_id / pair.framework / pair.case.id
                        server = launch_server(pair, download, gpus, workdir, deadline, run_id)
                    record.server = server
                    record.first_request_latency_s = next(iter(warm_up(server, pair, image, deadline)), None)
                    measured = benchmark(server, pair, image, record.samples, deadline)
                    record.samples = collect_perf_dump(server, measured)
                except Exception as exc:  # noqa: BLE001 - one failing case must not stop the others
                    record.error = exc
                    sticky = exc if record.server is None else sticky
                result = record.result()
                record_result(recorder, run_id, result)
                results.append(result)
        finally:
            if server is not None:
                stop_server(server)
    return results


@task(cache_policy=NO_CACHE)
def fetch_input_image(matrix: CaseMatrix, settings: Settings) -> bytes:
    return input_image(matrix.matrix.test_image_url, settings.state_dir / "images")


def measure_pairs(pairs: list[Pair], matrix: CaseMatrix, run_id: str, recorder: Recorder, hardware: Hardware,
                  settings: Settings) -> list[CaseResult]:
    """Every pair measured and recorded as it finishes; servers packed onto this host's GPUs."""
    image = fetch_input_image(matrix, settings) if any(p.case.needs_image for p in pairs) else None
    pool = GpuPool(hardware.gpu_ids, settings.state_dir / "gpu-locks")
    futures = [
        measure_group.with_options(timeout_seconds=sum(p.deadlines.case_minutes for p in group.pairs) * 60 + 600)
        .submit(group, run_id, recorder, pool, image, hardware.gpu_model, settings)
        for group in server_groups(pairs)
    ]
    return [result for future in futures for result in future.result()]
