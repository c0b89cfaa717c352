"""The downstream step: render the dashboard to files and to a Prefect markdown artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from diffbench import dashboard
from diffbench.regressions import scan
from diffbench.storage import store
from diffbench.storage.recorder import Recorder
from tasks.retry import is_retryable

ARTIFACT_KEY = "diffusion-comparison-dashboard"
TABLE_KEY = "diffusion-comparison-results"
TABLE_COLUMNS = ("case_id", "framework", "status", "error_class", "n", "median_s", "ci_low_s", "ci_high_s",
                 "server_median_s", "step_median_ms", "ms_per_megapixel_step", "joules_per_output", "engine_version",
                 "engine_build")


def results_table(run: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per result of the run, its headline columns; numbers as numbers, missing as None."""
    rows = run[list(TABLE_COLUMNS)].astype(object).where(run[list(TABLE_COLUMNS)].notna(), None)
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for row in rows.to_dict("records")]


@task(task_run_name="dashboard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=is_retryable)
def render_dashboard(recorder: Recorder, run_id: str, out: Path, pull_request: int | None = None) -> Path:
    """The run's page; a pull request's goes to a folder (and an artifact key) of its own, never the main page."""
    recorder.flush()  # results spooled while the database was away belong on the page too
    engine = recorder.engine()
    frame = store.results_frame(engine)
    page = dashboard.build(frame, run_id, scan(store.nightly_points(engine)))
    index = page.write(out if pull_request is None else out / f"pr-{pull_request}")
    page_key, table_key = (ARTIFACT_KEY, TABLE_KEY) if pull_request is None else (
        f"pr-{pull_request}-dashboard", f"pr-{pull_request}-results")
    create_markdown_artifact(key=page_key, markdown=page.inline_markdown(),
                             description=f"Diffusion serving comparison, run {run_id}")
    create_table_artifact(key=table_key, table=results_table(frame[frame["run_id"] == run_id]),
                          description=f"Every result of run {run_id}: sort by any column")
    get_run_logger().info("dashboard: %s", index.resolve())
    return index
