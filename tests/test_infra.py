"""The infra files say what they are meant to: GPUs in the Docker pool, the production settings."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[1] / "infra"


def test_docker_pool_passes_gpus_through_container_create_kwargs() -> None:
    template = json.loads((INFRA / "pools" / "gpu-docker.json").read_text())
    assert template["job_configuration"]["container_create_kwargs"] == "{{ container_create_kwargs }}"
    default = template["variables"]["properties"]["container_create_kwargs"]["default"]
    assert default["device_requests"] == [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]


def test_compose_stack_has_postgres_auth_leases_and_no_analytics() -> None:
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"prefect-db", "results-db", "prefect-server", "worker"}
    server = compose["services"]["prefect-server"]["environment"]
    assert server["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert server["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"].endswith("lease_storage.filesystem")
    assert server["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and "PREFECT_SERVER_API_AUTH_STRING" in server
    worker = compose["services"]["worker"]
    assert worker["environment"]["PREFECT_API_AUTH_STRING"] == "${PREFECT_AUTH_STRING}"
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    # Passwords come from infra/.env, never from the file.
    assert "${PREFECT_DB_PASSWORD" in server["PREFECT_API_DATABASE_CONNECTION_URL"]


def test_crash_automation_watches_heartbeats() -> None:
    automation = yaml.safe_load((INFRA / "automations" / "crash-silent-runs.yaml").read_text())
    assert automation["trigger"]["after"] == ["prefect.flow-run.heartbeat"]
    assert automation["actions"] == [{"type": "change-flow-run-state", "state": "CRASHED",
                                      "message": "No heartbeat for 90 s; its worker or host is gone."}]


def test_process_pool_turns_flow_run_heartbeats_on() -> None:
    template = json.loads((INFRA / "pools" / "gpu-process.json").read_text())
    assert template["job_configuration"]["env"] == "{{ env }}"
    assert template["variables"]["properties"]["env"]["default"] == {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
