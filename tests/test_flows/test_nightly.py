"""The nightly flow end to end, on the reference engine and the tiny models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.exceptions import ParameterTypeError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from diffbench.storage import store
from flows.nightly import CasesFailed, diffusion_comparison
from tasks.dashboard import ARTIFACT_KEY, TABLE_KEY
from tasks.progress import PROGRESS_KEY

from conftest import reference_in_docker

SECRET_TOKEN = "hf_e2e_secret_token_value"


def write_matrix(path: Path, tiny_models: dict[str, Path], cases: str) -> Path:
    path.write_text(textwrap.dedent("""
        measurement_repeats: 2
        deadlines: {ready_s: 120, request_s: 60, case_minutes: 10}
        cases:
        """) + textwrap.dedent(cases).format(flux=tiny_models["flux"], wan=tiny_models["wan"]))
    return path


GOOD_CASES = """
  - {{id: flux_t2i, model: {flux}, task: text-to-image, width: 64, height: 64, num_inference_steps: 3, seed: 1,
      frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
  - {{id: flux_edit, model: {flux}, task: image-edit, width: 64, height: 64, num_inference_steps: 4, seed: 1,
      frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
  - {{id: wan_t2v, model: {wan}, task: text-to-video, width: 64, height: 32, num_frames: 5,
      num_inference_steps: 2, seed: 1, frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
"""


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DIFFBENCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DIFFBENCH_DASHBOARD_DIR", str(tmp_path / "dashboard"))
    monkeypatch.setenv("HF_TOKEN", SECRET_TOKEN)
    return tmp_path


def our_servers(root: Path) -> list[psutil.Process]:
    """Processes whose command line mentions the test's folder: servers we started."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(root) in part for part in process.info["cmdline"] or []) and process.pid != psutil.Process().pid:
            found.append(process)
    return found


def all_text(engine) -> str:
    """Every row of every table, as text, to look for secrets in."""
    with engine.connect() as connection:
        return "\n".join(str(row) for table in ("runs", "results", "samples", "stage_timings")
                         for row in connection.execute(text(f"SELECT * FROM {table}")))


def test_flow_end_to_end(prefect_api, tiny_models, isolated: Path, database_url: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFBENCH_DATABASE_URL", database_url)
    config = write_matrix(isolated / "nightly.yaml", tiny_models, GOOD_CASES)
    state = diffusion_comparison(config=str(config), trigger="api", label="e2e", return_state=True)
    assert state.is_completed() and state.result() == {"measured": 3}

    engine = store.open_database(database_url)
    frame = store.results_frame(engine).set_index("case_id")
    assert (frame["status"] == "ok").all() and (frame["n"] == 2).all()
    assert frame["trigger"].unique().tolist() == ["api"] and frame["label"].unique().tolist() == ["e2e"]
    assert frame["run_status"].unique().tolist() == ["ok"]
    assert (frame["server_median_s"] < frame["median_s"]).all()
    assert store.counts(engine)["stage_timings"] == 3 * 2 * 3  # three stages per request
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT case_id, model_revision, download_s, ready_s, first_request_latency_s, serve_argv FROM results"
        )).all()
        sources = {r[0] for r in connection.execute(text("SELECT DISTINCT server_latency_source FROM samples"))}
    assert sources == {"perf_dump"}
    for case_id, revision, download_s, ready_s, first_s, _ in rows:
        assert revision == "local" and download_s >= 0 and ready_s > 0 and first_s > 0, case_id
    # flux_t2i and flux_edit share one server: one launch, one log.
    argv_by_case = {r[0]: r[5] for r in rows}
    assert argv_by_case["flux_t2i"] == argv_by_case["flux_edit"]
    assert len(list((isolated / "state" / "runs").rglob("server.log"))) == 2

    index = (isolated / "dashboard" / "index.md").read_text()
    for case_id in ("flux_t2i", "flux_edit", "wan_t2v"):
        assert f"| {case_id} |" in index and (isolated / "dashboard" / f"{case_id}.png").exists()
    assert not list((isolated / "state").rglob("server.pid")) and not our_servers(isolated)
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[ARTIFACT_KEY]), flow_run_id=ArtifactFilterFlowRunId(
                any_=[state.state_details.flow_run_id])))
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        [progress, table] = [client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(
                any_=[state.state_details.flow_run_id])))[0] for key in (PROGRESS_KEY, TABLE_KEY)]
        task_names = {t.name for t in client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))}
    assert "| flux_t2i |" in artifact.data and "data:image/png;base64," in artifact.data
    log_text = "\n".join(log.message for log in logs)
    assert "2 request(s): median" in log_text
    # Between Running and the end: a progress bar, a line per finished case; then a sortable table.
    assert (progress.type, float(progress.data), progress.description) == ("progress", 100.0,
                                                                           "3 of 3 case(s) finished")
    assert "3/3 finished: " in log_text and "flux_t2i/diffusers ok, median " in log_text
    rows = {row["case_id"]: row for row in json.loads(table.data)}
    assert table.type == "table" and set(rows) == {"flux_t2i", "flux_edit", "wan_t2v"}
    assert all(row["status"] == "ok" and row["median_s"] > 0 and row["n"] == 2 for row in rows.values())
    # Every task says what it holds.
    assert {"start run", "finish run", "dashboard", "diffusers: stop (flux_t2i, flux_edit)",
            "diffusers: stop (wan_t2v)"} <= task_names
    assert SECRET_TOKEN not in all_text(engine) + index + artifact.data + log_text
    assert make_url(database_url).password is None or make_url(database_url).password not in log_text
    engine.dispose()


FAILING_CASES = GOOD_CASES.split("  - {{id: flux_edit", maxsplit=1)[0] + """
  - {{id: bad_flag, model: {wan}, task: text-to-video, num_frames: 5,
      frameworks: {{diffusers: {{serve_args: --device cpu --no-such-flag}}}}}}
  - {{id: slow_start, model: {wan}, task: text-to-video, num_frames: 5, deadlines: {{ready_s: 0.5}},
      frameworks: {{diffusers: {{serve_args: [--device, cpu, --dtype, float32]}}}}}}
  - {{id: pipeline_error, model: {flux}, task: text-to-image, width: 32, height: 32,
      frameworks: {{diffusers: {{serve_args: [--device, cpu, --dtype, bfloat16],
                                 request_extra: {{max_sequence_length: 1024}}}}}}}}
  - {{id: missing_model, model: /nonexistent/model, task: text-to-image,
      frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
"""


def test_failures_are_classified_isolated_and_cleaned_up(prefect_api, tiny_models, isolated: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{isolated / 'results.db'}"
    monkeypatch.setenv("DIFFBENCH_DATABASE_URL", url)
    config = write_matrix(isolated / "nightly.yaml", tiny_models, FAILING_CASES)
    with pytest.raises(CasesFailed, match="4 case\\(s\\) failed"):
        diffusion_comparison(config=str(config))

    engine = store.open_database(url)
    with engine.connect() as connection:
        rows = {r[0]: r[1:] for r in connection.execute(text(
            "SELECT case_id, status, error_class, error_message, log_tail, n FROM results"))}
    assert rows["flux_t2i"][:2] == ("ok", None) and rows["flux_t2i"][4] == 2
    # The engine's own parser refused the flag: not retried, so one launch and one usage line in its log.
    assert rows["bad_flag"][:2] == ("failed", "bad_serve_args")
    assert "unrecognized arguments: --no-such-flag" in rows["bad_flag"][3]
    assert rows["bad_flag"][3].count("usage: ") == 1
    assert rows["slow_start"][:2] == ("failed", "timeout") and "not ready after 0.5 s" in rows["slow_start"][2]
    assert rows["pipeline_error"][:2] == ("failed", "http_error") and "HTTP 500" in rows["pipeline_error"][2]
    assert rows["missing_model"][:2] == ("failed", "download")
    index = (isolated / "dashboard" / "index.md").read_text()
    for error_class in ("bad_serve_args", "timeout", "http_error", "download"):
        assert f"**{error_class}**" in index
    assert not list((isolated / "state").rglob("server.pid")) and not our_servers(isolated)
    engine.dispose()


def test_a_password_in_the_parameter_is_refused(prefect_api, isolated: Path, tiny_models,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from diffbench.cli import main

    config = write_matrix(isolated / "nightly.yaml", tiny_models, GOOD_CASES)
    with pytest.raises(ParameterTypeError, match="database_url"):
        diffusion_comparison(config=str(config), database_url="postgresql+psycopg://u:pw@db/results")
    # From the CLI it is refused before a flow run exists: its parameters would show the password.
    with get_client(sync_client=True) as client:
        before = len(client.read_flow_runs())
    assert main(["run", "--config", str(config), "--database-url", "postgresql+psycopg://u:s3cret@db/r"]) == 2
    assert "carries a password" in capsys.readouterr().err
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    assert len(runs) == before and not [run for run in runs if "s3cret" in str(run.parameters)]


def test_cli_run_exits_non_zero_when_a_case_fails(tiny_models, isolated: Path) -> None:
    config = write_matrix(isolated / "nightly.yaml", tiny_models, """
  - {{id: missing_model, model: /nonexistent/model, task: text-to-image,
      frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
""")
    result = subprocess.run([sys.executable, "-m", "diffbench", "run", "--config", str(config),
                             "--database-url", f"sqlite:///{isolated / 'cli.db'}"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1
    assert "error: 1 case(s) failed: missing_model/diffusers: download" in result.stderr
    assert "missing_model/diffusers: download" in result.stdout + result.stderr  # per-case progress


def docker_matrix(path: Path, tiny_models: dict[str, Path], image: str, repeats: int = 2) -> Path:
    docker = reference_in_docker(image, network="host")
    failing = reference_in_docker(image) | {"serve_args": "--device cpu --no-such-flag"}
    document = {
        "measurement_repeats": repeats,
        "deadlines": {"ready_s": 120, "request_s": 60, "case_minutes": 10},
        "cases": [
            {"id": "flux_t2i", "model": str(tiny_models["flux"]), "task": "text-to-image", "width": 64, "height": 64,
             "num_inference_steps": 2, "frameworks": {
                 "diffusers": {"serve_args": "--device cpu"},
                 "diffusers-docker": {"engine": "diffusers", **docker}}},
            {"id": "wan_broken_image", "model": str(tiny_models["wan"]), "task": "text-to-video", "num_frames": 5,
             "frameworks": {"diffusers-docker": {"engine": "diffusers", **failing}}},
        ],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def our_containers(client) -> list:
    return client.containers.list(all=True, filters={"label": "diffbench.owner_pid"})


def test_docker_and_process_launchers_in_one_run(prefect_api, tiny_models, isolated: Path, docker_engine,
                                                 reference_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{isolated / 'results.db'}"
    monkeypatch.setenv("DIFFBENCH_DATABASE_URL", url)
    config = docker_matrix(isolated / "mixed.yaml", tiny_models, reference_image)
    with pytest.raises(CasesFailed, match="1 case\\(s\\) failed: wan_broken_image/diffusers-docker: bad_serve_args"):
        diffusion_comparison(config=str(config))
    engine = store.open_database(url)
    with engine.connect() as connection:
        rows = {(r[0], r[1]): r[2:] for r in connection.execute(text(
            "SELECT case_id, framework, status, n, image_digest, log_tail FROM results"))}
    engine.dispose()
    assert rows[("flux_t2i", "diffusers")][:3] == ("ok", 2, None)
    status, n, digest, _ = rows[("flux_t2i", "diffusers-docker")]
    assert (status, n) == ("ok", 2) and digest.startswith("sha256:")
    assert "unrecognized arguments: --no-such-flag" in rows[("wan_broken_image", "diffusers-docker")][3]
    assert not our_containers(docker_engine) and not our_servers(isolated)


def test_a_cancelled_run_leaves_no_container_or_server(tiny_models, isolated: Path, docker_engine,
                                                       reference_image: str) -> None:
    config = docker_matrix(isolated / "endless.yaml", tiny_models, reference_image, repeats=100000)
    env = os.environ | {"DIFFBENCH_DATABASE_URL": f"sqlite:///{isolated / 'cancel.db'}"}
    run = subprocess.Popen([sys.executable, "-m", "diffbench", "run", "--config", str(config), "--cases", "flux_t2i",
                            "--frameworks", "diffusers-docker"],
                           env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(c.status == "running" for c in our_containers(docker_engine)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert our_containers(docker_engine), "the docker case never started"
        time.sleep(2)
        # Cancelling from the UI: the worker sends SIGTERM to the flow's process group, then SIGKILL.
        os.killpg(run.pid, signal.SIGTERM)
        try:
            run.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert not our_containers(docker_engine) and not our_servers(isolated)
