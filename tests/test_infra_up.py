"""`diffbench infra up`: a local server, pool, automation, deployments and worker, until stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from deployments.infra import InfraError, LocalStack
from diffbench.launcher import free_port


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


def test_infra_up_brings_up_the_stack_and_stops_it_all(tmp_path: Path) -> None:
    port = free_port()
    up = subprocess.Popen([sys.executable, "-m", "diffbench", "infra", "up", "--home", str(tmp_path), "--port",
                           str(port), "--worker", "try-it"], stdout=subprocess.PIPE, text=True,
                          start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline, ready = time.monotonic() + 180, False
        while not ready and time.monotonic() < deadline and up.poll() is None:
            time.sleep(1)
            try:
                workers = httpx.post(f"{api}/work_pools/gpu/workers/filter", json={}, timeout=5).json()
                ready = any(w["name"] == "try-it" for w in workers)
            except (httpx.HTTPError, ValueError, TypeError):
                pass
        assert ready, (tmp_path / "server.log").read_text()[-2000:]
        names = {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=5).json()}
        assert names == {"nightly", "adhoc", "shard"}
        assert [a["name"] for a in httpx.post(f"{api}/automations/filter", json={}, timeout=5).json()] == [
            "crash-silent-flow-runs"]
        children = psutil.Process(up.pid).children(recursive=True)
        os.kill(up.pid, signal.SIGINT)  # Ctrl-C
        out, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    assert up.returncode == 0 and f"export PREFECT_API_URL={api}" in out
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
