"""The downstream step: render the dashboard to files and to a Prefect markdown artifact."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from diffbench import dashboard
from diffbench.regressions import scan
from diffbench.storage import store
from diffbench.storage.recorder import Recorder
from tasks.retry import is_retryable

ARTIFACT_KEY = "diffusion-comparison-dashboard"


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=is_retryable)
def render_dashboard(recorder: Recorder, run_id: str, out: Path, pull_request: int | None = None) -> Path:
    """The run's page; a pull request's goes to a folder (and an artifact key) of its own, never the main page."""
    recorder.flush()  # results spooled while the database was away belong on the page too
    engine = recorder.engine()
    page = dashboard.build(store.results_frame(engine), run_id, scan(store.nightly_points(engine)))
    index = page.write(out if pull_request is None else out / f"pr-{pull_request}")
    create_markdown_artifact(key=ARTIFACT_KEY if pull_request is None else f"pr-{pull_request}-dashboard",
                             markdown=page.inline_markdown(), description=f"Diffusion serving comparison, run {run_id}")
    get_run_logger().info("dashboard: %s", index.resolve())
    return index
