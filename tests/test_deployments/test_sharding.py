"""More than one GPU host: shards on several workers, one dashboard, dead workers detected."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from deployments.trigger import Api, trigger
from test_deployments.conftest import AUTH, stored_results, worker_env

SHARD_HOSTS = ("shard-host-a", "shard-host-b")


def start_run(stack, config: Path, label: str, **params: str) -> int:
    api = Api(stack.api_url, auth_string=AUTH)
    raw = {"config": str(config), "shards": "2", "trigger": "api", "label": label} | params
    return trigger(api, "diffusion-comparison/adhoc", raw, None, [], timeout_s=600, poll_s=1, summary_path=None)


def shard_runs(api: httpx.Client, label_run_id: str) -> list[dict]:
    shard = api.get("deployments/name/diffusion-shard/shard").json()
    runs = api.post("flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [shard["id"]]}}}).json()
    return [r for r in runs if r["parameters"]["run_id"] == label_run_id]


def worker_of(api: httpx.Client, flow_run_id: str) -> str | None:
    """The worker that took a flow run, from the event it emitted when it submitted it."""
    body = {"filter": {"event": {"name": ["prefect.worker.submitted-flow-run"]},
                       "any_resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 5}
    events = api.post("events/filter", json=body).json()["events"]
    return events[0]["resource"]["prefect.resource.name"] if events else None


def results(url: str, label: str) -> dict[str, tuple]:
    rows = stored_results(url, label, "s.case_id, s.status, s.error_class, s.host, r.id")
    return {row[0]: row[1:] for row in rows}


@pytest.fixture(scope="module")
def shard_workers(stack, worker) -> tuple[str, ...]:
    """Two GPU hosts on the shards queue, one shard each at a time; `worker` takes the parents."""
    for name in SHARD_HOSTS:
        stack.start_worker(name, queues=("shards",), limit=1, env=worker_env(stack, name))
    yield SHARD_HOSTS
    for name in SHARD_HOSTS:
        if f"worker-{name}" in stack.processes:
            stack.stop(f"worker-{name}")


def test_shards_run_on_both_workers_and_one_dashboard_covers_all(stack, shard_workers, api, tiny_config: Path,
                                                                 results_url: str) -> None:
    assert start_run(stack, tiny_config, "sharded", cases="flux_t2i,wan_t2v") == 0
    stored = results(results_url, "sharded")
    assert {case: row[:2] for case, row in stored.items()} == {"flux_t2i": ("ok", None), "wan_t2v": ("ok", None)}
    assert {row[2] for row in stored.values()} == set(SHARD_HOSTS)  # each model measured on its own host
    run_id = stored["flux_t2i"][3]
    shards = shard_runs(api, run_id)
    assert len(shards) == 2 and all(s["state"]["type"] == "COMPLETED" for s in shards)
    assert {worker_of(api, s["id"]) for s in shards} == set(SHARD_HOSTS)
    body = {"artifacts": {"key": {"any_": ["diffusion-comparison-dashboard"]}}}
    pages = [a["data"] for a in api.post("artifacts/filter", json=body).json() if run_id in a["description"]]
    assert len(pages) == 1 and "| flux_t2i |" in pages[0] and "| wan_t2v |" in pages[0]
    # The parent run's own progress follows what its shards stored.
    body = {"artifacts": {"key": {"any_": ["diffusion-comparison-progress"]}, "flow_run_id": {"any_": [run_id]}}}
    [bar] = api.post("artifacts/filter", json=body).json()
    assert (float(bar["data"]), bar["description"]) == (100.0, "2 of 2 case(s) finished")


def test_a_shard_whose_worker_dies_is_marked_crashed(stack, shard_workers, api, tmp_path: Path,
                                                     tiny_models: dict[str, Path], results_url: str) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(
        "measurement_repeats: 100000\ndeadlines: {ready_s: 120, request_s: 60, case_minutes: 30}\ncases:\n"
        f"  - {{id: endless, model: {tiny_models['flux']}, task: text-to-image, width: 32, height: 32,\n"
        "      num_inference_steps: 1, frameworks: {diffusers: {serve_args: --device cpu}}}\n"
        f"  - {{id: quick, model: {tiny_models['wan']}, task: text-to-video, width: 32, height: 32, num_frames: 5,\n"
        "      num_inference_steps: 1, measurement_repeats: 1, frameworks: {diffusers: {serve_args: --device cpu}}}\n"
    )
    outcome: list[int] = []
    follower = threading.Thread(target=lambda: outcome.append(start_run(stack, config, "host-dies")))
    follower.start()
    victim = None
    deadline = time.monotonic() + 180
    while victim is None and time.monotonic() < deadline:
        time.sleep(1)
        for run in api.post("flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}).json():
            if run["parameters"].get("pairs") == ["endless/diffusers"]:
                victim = worker_of(api, run["id"])
    assert victim in SHARD_HOSTS
    time.sleep(5)  # let it measure a while: what it stored stays, the rest is lost with the host
    stack.kill(f"worker-{victim}")
    follower.join(timeout=420)
    assert outcome == [1], "the parent must fail once the dead shard is declared crashed"
    stored = results(results_url, "host-dies")
    assert stored["quick"][:2] == ("ok", None)
    assert stored["endless"][:2] == ("failed", "crashed")


def test_with_one_worker_the_same_deployment_still_works(stack, shard_workers, api, tiny_config: Path,
                                                         results_url: str) -> None:
    for name in shard_workers:
        if f"worker-{name}" in stack.processes:
            stack.stop(f"worker-{name}")
    stack.start_worker("solo-host", env=worker_env(stack, "solo-host"))  # every queue, no limit
    try:
        assert start_run(stack, tiny_config, "one-worker", cases="flux_t2i,wan_t2v") == 0
    finally:
        stack.stop("worker-solo-host")
    stored = results(results_url, "one-worker")
    assert {row[:3] for row in stored.values()} == {("ok", None, "solo-host")}
    assert {worker_of(api, s["id"]) for s in shard_runs(api, stored["flux_t2i"][3])} == {"solo-host"}
