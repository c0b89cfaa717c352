"""`diffbench infra up`: a local server, pool, automation, deployments and worker, until stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from diffbench.launcher import free_port


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
