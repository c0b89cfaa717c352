"""The GitHub Actions path: the workflow's own command starts an adhoc run on a worker."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from deployments import trigger
from diffbench import cli
from test_deployments.conftest import AUTH, create_run, stored_results

PROJECT = Path(__file__).resolve().parents[2]
WORKFLOW = PROJECT / ".github" / "workflows" / "benchmark.yml"


def workflow_step() -> dict:
    document = yaml.safe_load(WORKFLOW.read_text())
    steps = document["jobs"]["benchmark"]["steps"]
    return next(step for step in steps if "deployments/trigger.py" in step.get("run", ""))


def run_as_the_workflow(
    stack, tmp_path: Path, run_id: str, auth: str = AUTH, **inputs: str
) -> subprocess.CompletedProcess:
    """The workflow's step, run by bash with the environment the workflow gives it."""
    step = workflow_step()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DIFFBENCH_"))} | {
        "PYTHONPATH": str(PROJECT), "PREFECT_API_URL": stack.api_url, "PREFECT_API_KEY": "",
        "PREFECT_API_AUTH_STRING": auth, "GITHUB_RUN_ID": run_id, "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_REPOSITORY": "org/diffbench", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "CONFIG": inputs.get("config", "deployments/nightly.yaml"), "SHARDS": inputs.get("shards", "1"),
        "CASES": inputs.get("cases", ""), "FRAMEWORKS": inputs.get("frameworks", ""),
        "LABEL": inputs.get("label", "v1"),
    }
    command = step["run"].replace("python ", f"{Path(os.sys.executable)} ", 1)
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600,
                          cwd=PROJECT, check=False)


def adhoc_runs(api: httpx.Client) -> list[dict]:
    deployment = api.get("deployments/name/diffusion-comparison/adhoc").json()
    return api.post("flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}).json()


def stored_runs(url: str, label: str) -> list[tuple]:
    return stored_results(url, label, "r.trigger, r.label, s.case_id, s.status, s.error_class, s.host")


def test_workflow_runs_adhoc_on_a_worker_once_per_attempt(stack, worker, api, tiny_config: Path, results_url: str,
                                                          tmp_path: Path) -> None:
    before = len(adhoc_runs(api))
    inputs = {"config": str(tiny_config), "cases": "flux_t2i,wan_t2v", "label": "release-v1"}
    first = run_as_the_workflow(stack, tmp_path, "1001", **inputs)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "/runs/flow-run/" in first.stdout and ": Running" in first.stdout and ": Completed" in first.stdout
    # Between the two, the progress of the run, as it goes: a GitHub Actions log is never silent for hours.
    assert ": 2 of 2 case(s) finished" in first.stdout, first.stdout
    assert stored_runs(results_url, "release-v1") == [
        ("api", "release-v1", "flux_t2i", "ok", None, worker), ("api", "release-v1", "wan_t2v", "ok", None, worker)]
    summary = (tmp_path / "summary.md").read_text()
    assert "| flux_t2i |" in summary and "**COMPLETED**" in summary and "base64" not in summary

    again = run_as_the_workflow(stack, tmp_path, "1001", **inputs)  # the step retried in the same attempt
    assert again.returncode == 0
    assert len(adhoc_runs(api)) == before + 1
    assert len(stored_runs(results_url, "release-v1")) == 2
    assert AUTH.split(":")[1] not in first.stdout + first.stderr + summary


def test_a_failed_run_makes_the_trigger_fail(stack, worker, api, tiny_config: Path, tmp_path: Path) -> None:
    result = run_as_the_workflow(stack, tmp_path, "1002", config=str(tiny_config), cases="missing_model")
    assert result.returncode == 1, result.stdout + result.stderr
    assert ": Failed" in result.stdout and "ended FAILED" in result.stdout
    # The reason follows the verdict: the flow run state's message, which names the failed case.
    reason = result.stdout.split("ended FAILED", 1)[1]
    assert "CasesFailed: 1 case(s) failed: missing_model/diffusers: download" in reason, result.stdout


@pytest.mark.parametrize(
    ("auth", "extra", "message"),
    [
        (AUTH, {"cases": "flux_t2i", "label": "x"}, None),
        ("diffbench:wrong-secret", {}, "the API refused our credentials"),
    ],
    ids=["unknown-parameter", "wrong-key"],
)
def test_bad_requests_fail_before_any_run(stack, api, tmp_path: Path, auth: str, extra: dict,
                                          message: str | None) -> None:
    before = len(adhoc_runs(api))
    if message is None:
        env_args = ["--param", "colour=red"]
        command = [os.sys.executable, str(PROJECT / "deployments" / "trigger.py"), "diffusion-comparison/adhoc",
                   *env_args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
            "PYTHONPATH": str(PROJECT), "PREFECT_API_URL": stack.api_url, "PREFECT_API_AUTH_STRING": auth}
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=60)
        message = "unknown parameter(s) colour for 'adhoc'"
    else:
        result = run_as_the_workflow(stack, tmp_path, "1003", auth=auth)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "wrong-secret" not in result.stdout + result.stderr
    assert len(adhoc_runs(api)) == before


def test_help_names_the_command_documents_every_option_and_the_exit_codes(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["trigger", "--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0 and text.startswith("usage: diffbench trigger ")
    for code in ("0  the run completed", "1  it failed", "2  nothing was started"):
        assert code in text
    parser = argparse.ArgumentParser()
    trigger.add_arguments(parser)
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert actions and all(a.help and a.help.strip() for a in actions)


def test_the_workflow_script_still_parses_its_arguments() -> None:
    script = subprocess.run([os.sys.executable, str(PROJECT / "deployments" / "trigger.py"), "--help"],
                            env=os.environ | {"PYTHONPATH": str(PROJECT)}, capture_output=True, text=True,
                            check=False, timeout=60)
    assert script.returncode == 0 and "usage: " in script.stdout and "exit codes:" in script.stdout


def test_a_quick_run_of_adhoc_with_its_defaults_completes_offline(stack, worker, api, results_url: str) -> None:
    """What a user's first click in the UI does: the demo's tiny models, built on the worker, no hub."""
    deployment = api.get("deployments/name/diffusion-comparison/adhoc").json()
    flow_run = create_run(api, deployment["id"], {})
    deadline = time.monotonic() + 540
    while (flow_run := api.get(f"flow_runs/{flow_run['id']}").json())["state"]["type"] not in trigger.TERMINAL:
        assert time.monotonic() < deadline, flow_run["state"]
        time.sleep(2)
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]["message"]
    assert re.fullmatch(r"adhoc-\d{4}-\d\d-\d\d-\d{4}", flow_run["name"])  # a name to find it by
    engine = create_engine(results_url, poolclass=NullPool)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT s.case_id, s.framework, s.status FROM runs r JOIN results s ON "
                                       "s.run_id = r.id WHERE r.flow_run_id = :id ORDER BY 1, 2"),
                                  {"id": flow_run["id"]}).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [(case, framework, "ok") for case in ("tiny_flux_t2i_64", "tiny_wan_t2v_64")
                                            for framework in ("diffusers-bf16", "diffusers-fp32")]
