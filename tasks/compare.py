"""The downstream verdict: this run against its baseline, as a Prefect artifact and log lines."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from diffbench.compare import LATEST_NIGHTLY, NO_COMPARISON, Comparison, against_nightlies, against_run, markdown
from diffbench.errors import RunNotStored, StorageUnavailable
from diffbench.storage import store
from diffbench.storage.recorder import Recorder
from tasks.retry import is_retryable

ARTIFACT_KEY = "diffusion-comparison-verdict"


def check_baseline(recorder: Recorder, compare_to: str) -> None:
    """Fail before hours of measuring when the named baseline run is not stored; an unreachable database
    only warns (the results spool, and `diffbench compare` judges them later)."""
    if compare_to in (LATEST_NIGHTLY, NO_COMPARISON):
        return
    try:
        store.run_measured(recorder.engine(), compare_to)
    except StorageUnavailable as exc:
        get_run_logger().warning("baseline run %s not checked: %s", compare_to, exc)
    except RunNotStored as exc:
        raise RunNotStored(f"compare_to: {exc}; give a stored run's id, `{LATEST_NIGHTLY}` or "
                           f"`{NO_COMPARISON}`") from exc


@task(task_run_name="compare with {compare_to}", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=is_retryable)
def publish_comparison(recorder: Recorder, run_id: str, compare_to: str) -> list[Comparison]:
    recorder.flush()
    engine = recorder.engine()
    run = store.run_measured(engine, run_id)
    if compare_to == LATEST_NIGHTLY:
        comparisons, against = against_nightlies(run, store.latest_nightlies(engine, run_id)), "the latest nightly"
    else:
        comparisons, against = against_run(run, store.run_measured(engine, compare_to)), f"run {compare_to}"
    table = markdown(comparisons)
    create_markdown_artifact(key=ARTIFACT_KEY, markdown=f"## Run {run_id} against {against}\n\n{table}\n",
                             description=f"Verdict per case: run {run_id} against {against}")
    logger = get_run_logger()
    for c in comparisons:
        ratio = f" ×{c.ratio:.3f} [{c.ratio_low:.3f}, {c.ratio_high:.3f}]" if c.ratio is not None else ""
        logger.info("%s/%s: %s%s against %s", c.case_id, c.framework, c.verdict, ratio, c.baseline_run_id or against)
    return comparisons
