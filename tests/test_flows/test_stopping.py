"""Runs that end cleanly: real `diffbench run` processes stopped by signals, killed, or sharing a host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import create_engine, text

from diffbench.cli import main

# A hang guard, not a speed check: benchmarks/stopping.py measures how fast.
WAIT_S = 240


def endless(folder: Path, flux: Path, repeats: int = 100000, step_delay_ms: int = 0) -> Path:
    """Two cases on one reference server, each measured `repeats` times; and a framework without adapter.

    `step_delay_ms` lengthens each denoising step, so that a short run still takes a while.
    """
    path = folder / f"repeats-{repeats}.yaml"
    serve_args = f"--device cpu --step-delay-ms {step_delay_ms}"
    path.write_text(textwrap.dedent(f"""
        measurement_repeats: {repeats}
        warmup_requests: 1
        not_run: [xdit]
        deadlines: {{ready_s: 120, request_s: 60, case_minutes: 30}}
        cases:
          - {{id: flux_64, model: {flux}, task: text-to-image, width: 64, height: 64, num_inference_steps: 2,
              frameworks: {{diffusers: {{serve_args: {serve_args}}}, xdit: {{}}}}}}
          - {{id: flux_32, model: {flux}, task: text-to-image, width: 32, height: 32, num_inference_steps: 2,
              frameworks: {{diffusers: {{serve_args: {serve_args}}}}}}}
        """))
    return path


class Run:
    """One `diffbench run` in its own process group (as a terminal starts it), with no Prefect API configured."""

    def __init__(self, folder: Path, config: Path, label: str, state: str = "state") -> None:
        self.folder, self.label = folder, label
        self.url = f"sqlite:///{folder / 'results.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")} | {
            "DIFFBENCH_STATE_DIR": str(folder / state), "DIFFBENCH_DATABASE_URL": self.url,
            "DIFFBENCH_DASHBOARD_DIR": str(folder / f"dashboard-{label}")}
        self.log = folder / f"{label}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "diffbench", "run", "--config", str(config), "--label", label],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def rows(self, sql: str) -> list[tuple]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                return [tuple(r) for r in connection.execute(text(sql), {"label": self.label})]
        finally:
            engine.dispose()

    def samples(self) -> int:
        if not (self.folder / "results.db").exists():
            return 0
        try:
            return self.rows("SELECT count(*) FROM samples s JOIN results r ON r.id = s.result_id "
                             "JOIN runs u ON u.id = r.run_id WHERE u.label = :label")[0][0]
        except Exception:  # noqa: BLE001 - the tables are being created by the run
            return 0

    def wait_for_samples(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while self.samples() < count:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no {count} samples: {self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise

    def run_row(self) -> tuple:
        [row] = self.rows("SELECT id, status, finished_at FROM runs WHERE label = :label")
        return row

    def results(self) -> dict[tuple[str, str], tuple]:
        rows = self.rows("SELECT r.case_id, r.framework, r.status, r.error_class, r.n, r.error_message, "
                         "(SELECT count(*) FROM samples s WHERE s.result_id = r.id) FROM results r "
                         "JOIN runs u ON u.id = r.run_id WHERE u.label = :label")
        return {(row[0], row[1]): row[2:] for row in rows}


def started_by(folder: Path) -> list[psutil.Process]:
    """Live processes working in `folder`: engine servers and Prefect APIs of the runs there."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and str(folder) in process.cwd() and process.status() != "zombie":
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stopped_run_is_marked_cancelled_keeping_what_it_measured(tiny_models, tmp_path: Path, stop: str) -> None:
    run = Run(tmp_path, endless(tmp_path, tiny_models["flux"]), stop)
    run.wait_for_samples(3)
    if stop == "ctrl-c":
        os.killpg(run.process.pid, signal.SIGINT)  # what the terminal sends: the whole foreground group
    else:
        run.process.send_signal(signal.SIGTERM)  # what a worker sends to cancel a flow run
    code = run.wait()
    output = run.log.read_text()
    reason = {"ctrl-c": "SIGINT", "sigterm": "SIGTERM"}[stop]
    run_id, status, finished_at = run.run_row()
    assert f"run {run_id} cancelled: the run was stopped by {reason}" in output
    assert f"Flow run 'adhoc-{stop}'" in output  # named after its label
    assert code == {"ctrl-c": 130, "sigterm": 143}[stop], output[-3000:]
    assert output.strip().splitlines()[-1] == (f"stopped by {reason}: the run is marked cancelled, with every "
                                               "sample measured before the stop")
    assert "Traceback" not in output and "EventsWorker" not in output and "Unable to connect" not in output
    assert status == "cancelled" and finished_at is not None
    results = run.results()
    status, error_class, n, message, stored = results[("flux_64", "diffusers")]
    assert (status, error_class) == ("failed", "cancelled") and n == stored >= 3, results
    assert f"stopped by {reason}" in message
    assert results[("flux_32", "diffusers")][:3] == ("failed", "cancelled", 0)
    assert results[("flux_64", "xdit")][:2] == ("not_run", "no_adapter")
    assert not started_by(tmp_path) and not list(tmp_path.rglob("server.pid"))
    # The run's page says it is incomplete, and what was not run.
    assert main(["dashboard", "--run", run_id, "--out", str(tmp_path / "page"), "--database-url", run.url]) == 0
    page = (tmp_path / "page" / "index.md").read_text()
    assert "Incomplete run" in page and "was **cancelled** before it finished; 0 of 2 case(s)" in page
    assert "not run (no adapter)" in page


def test_a_killed_run_is_marked_crashed_by_the_next_run_which_reaps_what_it_left(tiny_models, tmp_path: Path) -> None:
    killed = Run(tmp_path, endless(tmp_path, tiny_models["flux"]), "killed")
    killed.wait_for_samples(3)
    os.killpg(killed.process.pid, signal.SIGKILL)
    killed.wait()
    left = started_by(tmp_path)
    assert len(left) == 2, left  # the engine server and the run's Prefect API, each in a session of its own
    seen = killed.samples()
    assert killed.run_row()[1] == "running"

    following = Run(tmp_path, endless(tmp_path, tiny_models["flux"], repeats=1), "next")
    assert following.wait() == 0, following.log.read_text()[-3000:]
    output = following.log.read_text()
    assert f"run {killed.run_row()[0]} ended without being marked (its process was killed): marked crashed" in output
    assert "stopped a leftover from an earlier run: Prefect API server" in output
    assert "stopped a leftover from an earlier run: diffusers server for case 'flux_64'" in output
    assert not [p for p in left if p.is_running() and p.status() != "zombie"]
    assert killed.run_row()[1] == "crashed"
    results = killed.results()
    status, error_class, n, message, stored = results[("flux_64", "diffusers")]
    assert (status, error_class) == ("failed", "crashed") and n == stored >= seen >= 3
    assert message.endswith(f"its {n} measured sample(s) are kept")
    assert results[("flux_32", "diffusers")][:3] == ("failed", "crashed", 0)
    assert following.run_row()[1] == "ok"


def test_a_second_run_on_the_host_waits_for_the_first_and_says_for_whom(tiny_models, tmp_path: Path) -> None:
    config = endless(tmp_path, tiny_models["flux"], repeats=12, step_delay_ms=200)  # 12 x 2 steps: ~5 s a case
    first = Run(tmp_path, config, "first", state="state-a")
    first.wait_for_samples(1)
    second = Run(tmp_path, config, "second", state="state-b")  # another state dir: the lock is the host's
    assert first.wait() == 0 and second.wait() == 0, second.log.read_text()[-3000:]
    first_id = first.run_row()[0]
    assert f"waiting for this host's measuring lock ({os.environ['DIFFBENCH_HOST_LOCK']}), held by run {first_id} " \
           f"({config}) of" in second.log.read_text()
    spans = {label: run.rows("SELECT min(r.started_at), max(r.finished_at) FROM results r JOIN runs u ON "
                             "u.id = r.run_id WHERE u.label = :label AND r.status = 'ok'")[0]
             for label, run in (("first", first), ("second", second))}
    assert spans["first"][1] <= spans["second"][0], spans  # never measuring at the same time


def test_an_input_image_that_cannot_be_fetched_fails_only_its_cases(prefect_api, tiny_models, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.nightly import CasesFailed, diffusion_comparison, effective_trigger

    monkeypatch.setenv("DIFFBENCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DIFFBENCH_DASHBOARD_DIR", str(tmp_path / "dashboard"))
    monkeypatch.setenv("DIFFBENCH_DATABASE_URL", f"sqlite:///{tmp_path / 'results.db'}")
    config = tmp_path / "offline.yaml"
    config.write_text(textwrap.dedent(f"""
        measurement_repeats: 1
        test_image_url: http://127.0.0.1:9/cat.png
        cases:
          - {{id: edit, model: {tiny_models["flux"]}, task: image-edit, width: 32, height: 32, num_inference_steps: 1,
              frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
          - {{id: t2i, model: {tiny_models["flux"]}, task: text-to-image, width: 32, height: 32,
              num_inference_steps: 1, frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
        """))
    with pytest.raises(CasesFailed, match=r"1 case\(s\) failed: edit/diffusers: input_missing"):
        diffusion_comparison(config=str(config), trigger="schedule")
    page = (tmp_path / "dashboard" / "index.md").read_text()
    assert "| edit | **input_missing** |" in page
    # Asking for `schedule` does not make a run nightly history: only Prefect's scheduler does.
    assert "trigger **manual**" in page
    assert effective_trigger("api", auto_scheduled=True, pull_request=None) == "schedule"
    # A pull request's build never becomes nightly history, even on a schedule.
    assert effective_trigger("schedule", auto_scheduled=True, pull_request=42) == "pr"
