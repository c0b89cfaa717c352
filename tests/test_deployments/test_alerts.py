"""Alerts end to end: runs on a worker emit events, the shipped automation posts to a real webhook, once."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from diffbench.storage import store
from test_deployments.test_trigger import run_as_the_workflow

from factories import make_result, make_run

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP receiver: its URL and the JSON bodies posted to it."""
    received: list[dict] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def seed_regression(url: str) -> None:
    """Ten nights of `alerted_case` on sglang, the last two 30 % slower on a new engine build."""
    engine = create_engine(url, poolclass=NullPool)
    store.open_database(url).dispose()
    start = datetime.now(UTC) - timedelta(days=10)
    for night in range(10):
        slow = 1.3 if night >= 8 else 1.0
        run = make_run(f"alerts-night-{night}", started_at=start + timedelta(days=night))
        store.save_run(engine, run)
        store.save_result(engine, run.id, make_result("alerted_case", "sglang", (slow, slow * 1.01, slow * 0.99),
                                                      engine_version="0.5.5" if night >= 8 else "0.5.4"))
    engine.dispose()


def wait_for(received: list[dict], count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.5)


def test_a_regression_reaches_the_webhook_once(stack, worker, tiny_config: Path, results_url: str, tmp_path: Path,
                                               webhook: tuple[str, list[dict]]) -> None:
    url, received = webhook
    setup = subprocess.run([sys.executable, "deployments/alerts.py", "--webhook-url", url], cwd=PROJECT,
                           env=stack.environment(), capture_output=True, text=True, timeout=120, check=False)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    seed_regression(results_url)

    first = run_as_the_workflow(stack, tmp_path, "2001", config=str(tiny_config), cases="flux_t2i", label="alerts-1")
    assert first.returncode == 0, first.stdout + first.stderr
    wait_for(received, 1, 90)
    assert len(received) == 1, received
    text = received[0]["text"]
    assert "diffbench.regression in alerted_case/sglang" in text and "got slower by 30.0%" in text
    assert "engine 0.5.4 → 0.5.5" in text and "/runs/flow-run/alerts-night-8" in text

    second = run_as_the_workflow(stack, tmp_path, "2002", config=str(tiny_config), cases="flux_t2i", label="alerts-2")
    assert second.returncode == 0, second.stdout + second.stderr
    wait_for(received, 2, 20)
    assert len(received) == 1, received  # the same change is not announced every night it persists
