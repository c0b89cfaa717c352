"""After a run: one Prefect event per new alert of the nightly history, for automations to deliver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from diffbench.alerts import RECENT_DAYS, Alert, failure_streaks, regression_alerts
from diffbench.regressions import scan
from diffbench.storage import store
from diffbench.storage.recorder import Recorder
from tasks.retry import RETRIES, is_retryable


def run_link(run_id: str) -> str:
    """Where the run that shows an alert is, in the Prefect UI (diffbench runs are named by flow run id)."""
    ui = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")
    return f"{ui}/runs/flow-run/{run_id}"


@task(task_run_name="announce alerts", cache_policy=NO_CACHE, retry_condition_fn=is_retryable, **RETRIES)
def announce(recorder: Recorder) -> list[Alert]:
    """Emit `diffbench.regression` / `diffbench.failure-streak` events for alerts never announced before."""
    engine = recorder.engine()
    since = f"{datetime.now(UTC) - timedelta(days=RECENT_DAYS):%Y-%m-%d}"
    alerts = regression_alerts(scan(store.nightly_points(engine)), since)
    alerts += failure_streaks(store.results_frame(engine), since)
    new = store.claim_alerts(engine, alerts)
    for alert in new:
        link = run_link(alert.run_id)
        emit_event(event=f"diffbench.{alert.kind}", resource={
            "prefect.resource.id": f"diffbench.series.{alert.case_id}.{alert.framework}",
            "prefect.resource.name": f"{alert.case_id}/{alert.framework}",
            "diffbench.case": alert.case_id, "diffbench.framework": alert.framework,
        }, payload={"message": alert.message, "link": link, "run_id": alert.run_id, **alert.details})
        get_run_logger().warning("announced: %s (%s)", alert.message, link)
    return new
