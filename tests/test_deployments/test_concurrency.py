"""The nightly never overlaps itself: a second run waits for the first, and Prefect says so."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from deployments import trigger
from test_deployments.conftest import create_run


def test_a_second_nightly_waits_for_the_first(stack, worker, api, tiny_config: Path) -> None:
    deployment = api.get("deployments/name/diffusion-comparison/nightly").json()
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    parameters = {"config": str(tiny_config), "cases": ["flux_t2i"], "compare_to": "none"}
    first, second = (create_run(api, deployment["id"], parameters) for _ in range(2))
    seen: set[str] = set()  # both runs' state names at each look, "first+second"
    deadline = time.monotonic() + 540
    while True:
        runs = [api.get(f"flow_runs/{run['id']}").json() for run in (first, second)]
        states = [(run["state"]["type"], run["state"]["name"]) for run in runs]
        seen.add("+".join(name for _, name in states))
        if all(kind in trigger.TERMINAL for kind, _ in states):
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.5)
    assert [kind for kind, _ in states] == ["COMPLETED", "COMPLETED"], [r["state"]["message"] for r in runs]
    # One waited, in the state the UI shows, while the other ran; they never ran at once.
    assert any("AwaitingConcurrencySlot" in both for both in seen), seen
    assert "Running+Running" not in seen, seen
    early, late = sorted(runs, key=lambda run: run["start_time"])
    assert datetime.fromisoformat(late["start_time"]) >= datetime.fromisoformat(early["end_time"])
