"""Retry of a failed flow run, as the UI does it: only the failed case is measured again; the rest is kept."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from deployments import trigger
from test_deployments.conftest import create_run


def wait_for_end(api, flow_run_id: str) -> dict:
    deadline = time.monotonic() + 540
    while (run := api.get(f"flow_runs/{flow_run_id}").json())["state"]["type"] not in trigger.TERMINAL:
        assert time.monotonic() < deadline, run["state"]
        time.sleep(1)
    return run


def results(url: str, flow_run_id: str) -> dict[str, tuple]:
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT s.case_id, s.status, s.started_at, (SELECT string_agg(CAST(p.client_latency_s AS TEXT), ',' "
            "ORDER BY p.index) FROM samples p WHERE p.result_id = s.id), r.status FROM runs r JOIN results s ON "
            "s.run_id = r.id WHERE r.flow_run_id = :id"), {"id": flow_run_id}).all()
    engine.dispose()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_retry_measures_only_the_case_that_failed(stack, worker, api, tiny_models: dict[str, Path],
                                                  results_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    late_model = tmp_path / "models" / "tiny-flux-late"  # not there yet: its case fails the first attempt
    config = tmp_path / "retry.yaml"
    config.write_text(textwrap.dedent(f"""
        measurement_repeats: 2
        deadlines: {{ready_s: 120, request_s: 60, case_minutes: 10}}
        cases:
          - {{id: early, model: {tiny_models['flux']}, task: text-to-image, width: 32, height: 32,
              num_inference_steps: 2, frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
          - {{id: late, model: {late_model}, task: text-to-image, width: 32, height: 32,
              num_inference_steps: 2, frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
        """))
    deployment = api.get("deployments/name/diffusion-comparison/adhoc").json()
    run = create_run(api, deployment["id"], {"config": str(config), "compare_to": "none"})
    assert wait_for_end(api, run["id"])["state"]["type"] == "FAILED"
    first = results(results_url, run["id"])
    assert (first["early"][0], first["late"][0], first["early"][3]) == ("ok", "failed", "failed")

    late_model.parent.mkdir(parents=True)
    late_model.symlink_to(tiny_models["flux"], target_is_directory=True)
    # The UI's Retry: the failed run back to Scheduled, for the worker to take again.
    api.post(f"flow_runs/{run['id']}/set_state",
             json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True}).raise_for_status()
    again = wait_for_end(api, run["id"])
    assert again["state"]["type"] == "COMPLETED" and again["run_count"] == 2, again["state"]
    second = results(results_url, run["id"])
    assert second["early"] == first["early"][:3] + ("ok",), "kept as measured: same start, same samples"
    assert second["late"][0] == "ok" and second["late"][1] > first["late"][1]
    logs = api.post("logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    assert any("keeping 1 case(s) measured before: early/diffusers" in log["message"] for log in logs)
