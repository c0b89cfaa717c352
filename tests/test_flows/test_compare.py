"""A run judged against another on real reference servers: a rerun is `no change`, a known slowdown `slower`,
and the verdict is published on the flow run as an artifact."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from diffbench.cli import main
from diffbench.storage import store
from tasks.compare import ARTIFACT_KEY

# Sleeping 100 ms per step (400 ms a request) dwarfs the tiny model's own ~30 ms on a busy CPU, so a rerun
# stays within the 5 % step; 200 ms per step is about 1.9 times slower.
MATRIX = """
measurement_repeats: 6
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
    for name, delay in (("base", 100), ("slow", 200)):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(textwrap.dedent(MATRIX).format(flux=tiny_models["flux"], delay=delay))

    assert main(["run", "--config", str(configs["base"]), "--database-url", url, "--compare-to", "none"]) == 0
    [baseline] = run_ids(url)
    assert main(["run", "--config", str(configs["base"]), "--database-url", url, "--compare-to", baseline]) == 0
    rerun_artifact = latest_verdict_artifact()
    assert main(["run", "--config", str(configs["slow"]), "--database-url", url, "--compare-to", baseline]) == 0
    slow_artifact = latest_verdict_artifact()
    _, rerun, slow = run_ids(url)

    assert f"## Run {rerun} against run {baseline}" in rerun_artifact
    assert "| image | diffusers | no change |" in rerun_artifact
    assert f"## Run {slow} against run {baseline}" in slow_artifact
    assert "| image | diffusers | 🔴 slower (other config) |" in slow_artifact

    capsys.readouterr()
    assert main(["compare", slow, "--against", baseline, "--json", "--database-url", url]) == 0
    [verdict] = json.loads(capsys.readouterr().out)
    assert verdict["verdict"] == "slower" and 1.5 < verdict["ratio_low"] <= verdict["ratio"]
    assert verdict["confidence"] > 0.99 and verdict["same_series"] is False
