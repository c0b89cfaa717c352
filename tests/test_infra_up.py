"""`diffbench infra up|down|status`: a local server, pool, automation, deployments and worker, left running."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from deployments.infra import InfraError, LocalStack, Recorded
from diffbench.launcher import free_port
from diffbench.processes import same_process


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack whose server is up: the one a second `infra up` would collide with."""
    stack = LocalStack(tmp_path_factory.mktemp("running"), port=free_port())
    try:
        stack.start_server()
        yield stack
    finally:
        stack.stop()


def test_a_second_server_on_a_taken_port_is_refused(running: LocalStack, tmp_path: Path) -> None:
    second = LocalStack(tmp_path, port=running.port)
    with pytest.raises(InfraError, match=rf"port {running.port} .*--port"):
        second.start_server()
    assert not second.processes
    up = subprocess.run([sys.executable, "-m", "diffbench", "infra", "up", "--home", str(tmp_path), "--port",
                         str(running.port)], capture_output=True, text=True, timeout=120, check=False)
    assert up.returncode == 1 and up.stderr.startswith(f"error [infra]: port {running.port} "), up.stderr
    assert "Traceback" not in up.stderr and "Prefect UI" not in up.stdout
    assert httpx.get(f"{running.api_url}/health", timeout=5).status_code == 200


def test_the_crash_automation_is_created_once(running: LocalStack) -> None:
    running.create_automation()
    running.create_automation()  # a second `infra up` on the same home and port
    automations = httpx.post(f"{running.api_url}/automations/filter", json={}, timeout=5).json()
    assert [a["name"] for a in automations] == ["crash-silent-flow-runs"]


def infra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "diffbench", "infra", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_infra_up_twice_status_and_down(tmp_path: Path) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    try:
        up = infra("up", "--home", str(tmp_path), "--port", str(port), "--worker", "try-it")
        assert up.returncode == 0, up.stdout + up.stderr
        # Progress while it comes up, and where everything is.
        for line in (f"Prefect server on 127.0.0.1:{port} … done in ", "work pool 'gpu' … done in ",
                     "  created", "deployments nightly, adhoc, shard … done in ", "worker 'try-it' … done in ",
                     f"export PREFECT_API_URL={api}", f"stop it: diffbench infra down --home {tmp_path}"):
            assert line in up.stdout, up.stdout
        recorded = Recorded.load(tmp_path)
        assert recorded is not None and all(recorded.alive().values()) and set(recorded.processes) == {
            "server", "worker-try-it"}
        deadline = time.monotonic() + 120
        while not any(w["name"] == "try-it" for w in httpx.post(f"{api}/work_pools/gpu/workers/filter", json={},
                                                                 timeout=5).json()):
            assert time.monotonic() < deadline, (tmp_path / "worker-try-it.log").read_text()[-2000:]
            time.sleep(1)
        assert {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=5).json()} == {
            "nightly", "adhoc", "shard"}

        status = infra("status", "--home", str(tmp_path))
        assert status.returncode == 0 and "server (pid" in status.stdout and f"{api}: healthy" in status.stdout

        again = infra("up", "--home", str(tmp_path), "--port", str(port))
        assert again.returncode == 0 and again.stdout.startswith(f"already up: Prefect UI http://127.0.0.1:{port}")
        assert Recorded.load(tmp_path) == recorded, "a second up starts nothing and claims nothing"
        assert [a["name"] for a in httpx.post(f"{api}/automations/filter", json={}, timeout=5).json()] == [
            "crash-silent-flow-runs"]
    finally:
        down = infra("down", "--home", str(tmp_path))
    assert down.returncode == 0 and "worker-try-it (pid" in down.stdout and "server (pid" in down.stdout
    assert not any(psutil.pid_exists(pid) and same_process(pid, started)
                   for pid, started in recorded.processes.values())
    assert infra("status", "--home", str(tmp_path)).returncode == 1
    assert infra("down", "--home", str(tmp_path)).stdout.startswith("no stack recorded")
