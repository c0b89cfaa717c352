"""A real Prefect server with basic auth and process workers on loopback, for the deployment tests."""

from __future__ import annotations

import os
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from deployments.infra import LocalStack
from diffbench.launcher import free_port

AUTH = "diffbench:stack-test-secret"


@pytest.fixture(scope="session")
def results_url() -> Iterator[str]:
    """A Postgres database for the results of every run the workers make."""
    server = os.environ.get("DIFFBENCH_TEST_POSTGRES_URL")
    if not server:
        pytest.fail("Postgres is required in CI") if os.environ.get("CI") else pytest.skip("no Postgres")
    name = f"diffbench_stack_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, results_url: str) -> Iterator[LocalStack]:
    """Server (basic auth), the gpu pool, the crash automation and the deployments; no worker yet."""
    home = tmp_path_factory.mktemp("stack")
    stack = LocalStack(home, port=free_port(), auth=AUTH, env={
        "DIFFBENCH_DATABASE_URL": results_url,
        "DIFFBENCH_RETRY_DELAYS_S": "[0.1, 0.1]",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
    })
    try:
        stack.start_server()
        stack.create_pool()
        stack.create_automation()
        stack.deploy()
        yield stack
    finally:
        stack.stop()


def stored_results(url: str, label: str, columns: str) -> list[tuple]:
    """`columns` (of runs `r` and their results `s`) for the runs labelled `label`, by case id."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        rows = connection.execute(text(
            f"SELECT {columns} FROM runs r JOIN results s ON s.run_id = r.id "
            "WHERE r.label = :label ORDER BY s.case_id"), {"label": label}).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def worker_env(stack: LocalStack, name: str) -> dict[str, str]:
    """Each worker is a host of its own: its own state folder and name."""
    home = stack.home / name
    return {"DIFFBENCH_STATE_DIR": str(home / "state"), "DIFFBENCH_DASHBOARD_DIR": str(home / "dashboard"),
            "DIFFBENCH_HOST_LABEL": name, "DIFFBENCH_HOST_LOCK": str(home / "measuring.lock")}


@pytest.fixture(scope="session")
def worker(stack: LocalStack) -> str:
    """The worker that takes comparison runs (the default queue); shard workers are started apart."""
    stack.start_worker("gpu-host-1", queues=("default",), env=worker_env(stack, "gpu-host-1"))
    return "gpu-host-1"


@pytest.fixture
def api(stack: LocalStack) -> Iterator[httpx.Client]:
    user, password = AUTH.split(":")
    with httpx.Client(base_url=stack.api_url + "/", auth=(user, password), timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> Path:
    """A matrix of both tiny models on the reference engine, and a case that always fails."""
    path = tmp_path_factory.mktemp("configs") / "tiny.yaml"
    path.write_text(textwrap.dedent(f"""
        measurement_repeats: 2
        deadlines: {{ready_s: 120, request_s: 60, case_minutes: 10}}
        cases:
          - {{id: flux_t2i, model: {tiny_models['flux']}, task: text-to-image, width: 64, height: 64,
              num_inference_steps: 2, frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
          - {{id: wan_t2v, model: {tiny_models['wan']}, task: text-to-video, width: 32, height: 32,
              num_frames: 5, num_inference_steps: 2, frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
          - {{id: missing_model, model: /nonexistent/model, task: text-to-image,
              frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
        """))
    return path


def create_run(api: httpx.Client, deployment_id: str, parameters: dict) -> dict:
    """A flow run of the deployment; the test server's SQLite can answer 500 while it is busy: asked again."""
    for _ in range(5):
        response = api.post(f"deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})
        if response.status_code < 500:
            break
        time.sleep(1)
    assert response.status_code == 201, response.text
    return response.json()
