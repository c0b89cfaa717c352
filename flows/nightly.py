"""The diffusion comparison: every case on every framework, stored as it finishes, then the dashboard."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from diffbench.config import CaseMatrix, load_matrix
from diffbench.gpus import GpuPool, detect
from diffbench.groups import ServerGroup, server_groups
from diffbench.measure import CaseRecord, Deadline
from diffbench.media import input_image
from diffbench.results import CaseResult, RunInfo, Trigger
from diffbench.settings import Settings
from diffbench.storage.recorder import Recorder
from diffbench.storage.store import public_url
from tasks.benchmark import benchmark
from tasks.dashboard import render_dashboard
from tasks.download import download_model
from tasks.launch import launch_server
from tasks.perf_dump import collect_perf_dump
from tasks.record import finish_run, record_result, start_run
from tasks.stop import stop_server
from tasks.warmup import warm_up


class CasesFailed(Exception):
    """Raised at the very end, after everything measured was stored and rendered."""


@task(task_run_name="{group.label}", cache_policy=NO_CACHE)
def measure_group(group: ServerGroup, run: RunInfo, recorder: Recorder, pool: GpuPool, image: bytes | None,
                  hardware: str, settings: Settings) -> list[CaseResult]:
    """Download → launch → warm up → benchmark → perf dump per case, on one server; stop always."""
    results, download, server = [], None, None
    sticky: Exception | None = pool.refusal(group.num_gpus)  # a download, launch or host failure, for all cases
    with pool.take(0 if sticky else group.num_gpus) as gpus:
        try:
            for pair in group.pairs:
                record, deadline = CaseRecord(pair, hardware), Deadline.for_case(pair)
                try:
                    if sticky is not None:
                        raise sticky
                    download = download or download_model(pair, settings)
                    record.download = download
                    if server is not None and not server.alive:
                        stop_server(server)  # its leader died; the rest of its process group may not have
                        server = None
                    if server is None:
                        workdir = settings.runs_dir / run.id / pair.framework / pair.case.id
                        server = launch_server(pair, download, gpus, workdir, deadline)
                    record.server = server
                    record.first_request_latency_s = next(iter(warm_up(server, pair, image, deadline)), None)
                    measured = benchmark(server, pair, image, record.samples, deadline)
                    record.samples = collect_perf_dump(server, measured)
                except Exception as exc:  # noqa: BLE001 - one failing case must not stop the others
                    record.error = exc
                    sticky = exc if record.server is None else sticky
                result = record.result()
                record_result(recorder, run.id, result)
                results.append(result)
        finally:
            if server is not None:
                stop_server(server)
    return results


@task(cache_policy=NO_CACHE)
def fetch_input_image(matrix: CaseMatrix, settings: Settings) -> bytes:
    return input_image(matrix.matrix.test_image_url, settings.state_dir / "images")


@flow(name="diffusion-comparison", task_runner=ThreadPoolTaskRunner(max_workers=16))
def diffusion_comparison(
    config: str,
    cases: list[str] | None = None,
    frameworks: list[str] | None = None,
    label: str | None = None,
    trigger: Trigger = "manual",
    database_url: str | None = None,
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
    """
    settings = Settings(**({"database_url": public_url(database_url)} if database_url else {}))
    matrix = load_matrix(config)
    pairs = matrix.select(cases or None, frameworks or None)
    hardware = detect(settings.gpus)
    with Recorder(settings.database_url.get_secret_value(), settings.spool_dir) as recorder:
        run = start_run(recorder, matrix, trigger, label, hardware, settings.state_dir)
        image = fetch_input_image(matrix, settings) if any(p.case.needs_image for p in pairs) else None
        pool = GpuPool(hardware.gpu_ids)
        futures = [
            measure_group.with_options(timeout_seconds=sum(p.deadlines.case_minutes for p in group.pairs) * 60 + 600)
            .submit(group, run, recorder, pool, image, hardware.gpu_model, settings)
            for group in server_groups(pairs)
        ]
        results = [result for future in futures for result in future.result()]
        finish_run(recorder, run.id, results)
        render_dashboard(recorder, run.id, settings.dashboard_dir)
    failed = [f"{r.case_id}/{r.framework}: {r.error_class}" for r in results if r.status != "ok"]
    get_run_logger().info("%d of %d case(s) measured", len(results) - len(failed), len(results))
    if failed:
        raise CasesFailed(f"{len(failed)} case(s) failed: " + "; ".join(failed))
    return {"measured": len(results)}

