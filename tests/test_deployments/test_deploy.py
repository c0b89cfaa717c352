"""`prefect deploy --all` creates what prefect.yaml means: read back through the API."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

PROJECT = Path(__file__).resolve().parents[2]


def deployment(api: httpx.Client, name: str) -> dict:
    response = api.get(f"deployments/name/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def test_nightly_is_scheduled_at_midnight_utc_on_the_gpu_pool(api: httpx.Client) -> None:
    nightly = deployment(api, "diffusion-comparison/nightly")
    [schedule] = nightly["schedules"]
    assert schedule["active"] and schedule["schedule"]["cron"] == "0 0 * * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert nightly["parameters"] == {"config": "deployments/nightly.yaml"}  # nightly: made by the scheduler
    assert nightly["work_pool_name"] == "gpu" and nightly["enforce_parameter_schema"] is True
    assert nightly["entrypoint"] == "flows/nightly.py:diffusion_comparison"


def test_adhoc_is_unscheduled_with_an_editable_typed_schema(api: httpx.Client) -> None:
    adhoc = deployment(api, "diffusion-comparison/adhoc")
    assert adhoc["schedules"] == [] and adhoc["work_pool_name"] == "gpu"
    assert adhoc["parameters"]["trigger"] == "manual" and adhoc["enforce_parameter_schema"] is True
    schema = adhoc["parameter_openapi_schema"]
    assert set(schema["properties"]) == {"config", "cases", "frameworks", "label", "trigger", "database_url", "shards",
                                         "compare_to", "engines", "pull_request"}
    assert all(schema["properties"][name].get("description") for name in ("compare_to", "engines", "pull_request"))
    assert schema["required"] == ["config"]
    trigger = schema["definitions"]["Trigger"] if "Trigger" in schema.get("definitions", {}) else schema["properties"][
        "trigger"]
    assert trigger.get("enum") == ["manual", "api", "schedule"]
    assert schema["properties"]["shards"]["minimum"] == 1


def test_a_mistyped_parameter_is_refused_by_the_server(api: httpx.Client) -> None:
    adhoc = deployment(api, "diffusion-comparison/adhoc")
    response = api.post(f"deployments/{adhoc['id']}/create_flow_run", json={"parameters": {"shards": "many"}})
    assert response.status_code == 409 and "shards" in response.text


def test_a_password_in_the_database_url_is_refused_before_a_flow_run_exists(api: httpx.Client) -> None:
    adhoc = deployment(api, "diffusion-comparison/adhoc")
    before = api.post("flow_runs/count", json={}).json()
    response = api.post(f"deployments/{adhoc['id']}/create_flow_run",
                        json={"parameters": {"database_url": "postgresql+psycopg://bench:s3cret@db:5432/results"}})
    assert response.status_code == 409 and "database_url" in response.text
    assert api.post("flow_runs/count", json={}).json() == before
    assert "s3cret" not in api.post("flow_runs/filter", json={}).text


def test_a_quick_run_of_adhoc_is_the_demo(api: httpx.Client) -> None:
    assert deployment(api, "diffusion-comparison/adhoc")["parameters"] == {"config": "demo", "trigger": "manual"}


def test_shard_deployment_exists(api: httpx.Client) -> None:
    shard = deployment(api, "diffusion-shard/shard")
    assert set(shard["parameter_openapi_schema"]["properties"]) == {"config", "pairs", "run_id", "engines"}


def test_secrets_are_not_in_the_deployment_file() -> None:
    text = (PROJECT / "prefect.yaml").read_text()
    document = yaml.safe_load(text)
    for item in document["deployments"]:
        assert "job_variables" not in item.get("work_pool", {})
    for word in ("HF_TOKEN", "PASSWORD", "API_KEY", "AUTH_STRING"):
        assert word not in "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
