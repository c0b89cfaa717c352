"""A run judged against another on real reference servers: a rerun is `no change`, a pull request's slower build
`slower`; the verdict is published on the flow run as an artifact, and the pull request's run is kept apart."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from sqlalchemy import select

from diffbench.cli import main
from diffbench.storage import store
from diffbench.storage.models import Result, Run
from flows.nightly import diffusion_comparison
from tasks.compare import ARTIFACT_KEY

# Sleeping 400 ms per step (1.6 s a request) dwarfs the tiny model's own 30-100 ms on a busy CPU, so a rerun
# stays within the 5 % step even when the machine's load changes between runs; 800 ms per step is ~2x slower.
MATRIX = """
measurement_repeats: 5
deadlines: {{ready_s: 120, request_s: 60, case_minutes: 10}}
cases:
  - {{id: image, model: {flux}, task: text-to-image, width: 32, height: 32, num_inference_steps: 4, seed: 1,
      frameworks: {{diffusers: {{serve_args: --device cpu --step-delay-ms {delay}}}}}}}
"""


def run_ids(url: str) -> list[str]:
    engine = store.open_database(url)
    try:
        return list(store.results_frame(engine).sort_values("started_at")["run_id"].unique())
    finally:
        engine.dispose()


def latest_verdict_artifact() -> str:
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY])),
                                           sort=ArtifactSort.CREATED_DESC, limit=1)
    return artifacts[0].data


def test_a_rerun_is_no_change_and_a_slower_build_is_slower(
        prefect_api, tiny_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DIFFBENCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DIFFBENCH_DASHBOARD_DIR", str(tmp_path / "dashboard"))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    configs = {}
    for name, delay in (("base", 400), ("slow", 800)):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(textwrap.dedent(MATRIX).format(flux=tiny_models["flux"], delay=delay))

    assert main(["run", "--config", str(configs["base"]), "--database-url", url, "--compare-to", "none"]) == 0
    [baseline] = run_ids(url)
    assert main(["run", "--config", str(configs["base"]), "--database-url", url, "--compare-to", baseline]) == 0
    rerun_artifact = latest_verdict_artifact()
    monkeypatch.setenv("DIFFBENCH_DATABASE_URL", url)
    diffusion_comparison(config=str(configs["slow"]), compare_to=baseline, pull_request=7,
                         engines={"diffusers": f"python:{sys.executable}"})
    slow_artifact = latest_verdict_artifact()
    _, rerun, slow = run_ids(url)

    assert f"## Run {rerun} against run {baseline}" in rerun_artifact
    assert "| image | diffusers | no change |" in rerun_artifact
    assert f"## Run {slow} against run {baseline}" in slow_artifact
    assert "| image | diffusers | 🔴 slower (other config) |" in slow_artifact

    # The pull request's run: its name, its build, its own page; never nightly history nor the main page.
    engine = store.open_database(url)
    with engine.connect() as connection:
        run = connection.execute(select(Run).where(Run.id == slow)).one()
        builds = set(connection.scalars(select(Result.engine_build).where(Result.run_id == slow)))
        packages = set(connection.scalars(select(Result.engine_packages)))
    assert (run.trigger, run.pull_request) == ("pr", 7) and builds == {f"python: {sys.executable}"}
    [environment] = packages  # one Python for all three runs: one frozen package list
    assert environment and len(environment) == 16
    assert store.latest_nightlies(engine, slow) == {} and not store.nightly_points(engine)
    engine.dispose()
    with get_client(sync_client=True) as prefect:
        assert prefect.read_flow_run(UUID(slow)).name == "pr-7"
    assert "pull request #7" in (tmp_path / "dashboard" / "pr-7" / "index.md").read_text()
    assert f"Run `{rerun}`" in (tmp_path / "dashboard" / "index.md").read_text()

    capsys.readouterr()
    assert main(["compare", slow, "--against", baseline, "--json", "--database-url", url]) == 0
    [verdict] = json.loads(capsys.readouterr().out)
    assert verdict["verdict"] == "slower" and 1.5 < verdict["ratio_low"] <= verdict["ratio"]
    assert verdict["confidence"] > 0.99 and verdict["same_series"] is False
