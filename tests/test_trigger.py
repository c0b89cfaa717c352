"""The trigger's pure parts: auth headers, links, parameters, idempotency keys, the workflow file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deployments.trigger import Api, TriggerError, coerce_params, default_idempotency_key, parse_params

PROJECT = Path(__file__).resolve().parents[1]
SCHEMA = {"name": "adhoc", "parameter_openapi_schema": {"properties": {
    "config": {"type": "string"}, "label": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    "cases": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
    "shards": {"type": "integer"}}}}


def test_cloud_key_is_a_bearer_token_and_self_hosted_is_basic_auth() -> None:
    cloud = Api.from_env({"PREFECT_API_URL": "https://api.prefect.cloud/api/accounts/a1/workspaces/w2",
                          "PREFECT_API_KEY": "pnu_key"})
    with cloud.client() as http:
        assert http.headers["Authorization"] == "Bearer pnu_key"
    assert cloud.run_link("r9") == "https://app.prefect.cloud/account/a1/workspace/w2/runs/flow-run/r9"
    hosted = Api.from_env({"PREFECT_API_URL": "https://prefect.example.com/api/", "PREFECT_API_AUTH_STRING": "u:p:w"})
    with hosted.client() as http:
        assert http.auth is not None and "Authorization" not in http.headers
    assert hosted.run_link("r9") == "https://prefect.example.com/runs/flow-run/r9"
    with pytest.raises(TriggerError, match="PREFECT_API_URL is not set"):
        Api.from_env({})


def test_parameters_follow_the_deployment_schema() -> None:
    raw = parse_params(["config=m.yaml", "label=123", "cases=flux, wan", "shards=2"])
    assert coerce_params(SCHEMA, raw) == {"config": "m.yaml", "label": "123", "cases": ["flux", "wan"], "shards": 2}
    assert coerce_params(SCHEMA, {"cases": "", "label": ""}) == {"cases": None, "label": None}
    assert coerce_params(SCHEMA, {"cases": '["a"]'}) == {"cases": ["a"]}
    with pytest.raises(TriggerError, match=r"unknown parameter\(s\) colour for 'adhoc'; it takes: cases, config"):
        coerce_params(SCHEMA, {"colour": "red"})
    with pytest.raises(TriggerError, match="shards: 'two' is not valid JSON"):
        coerce_params(SCHEMA, {"shards": "two"})
    with pytest.raises(TriggerError, match="expected name=value"):
        parse_params(["shards"])


def test_idempotency_key_is_per_github_run_attempt() -> None:
    env = {"GITHUB_RUN_ID": "77", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_REPOSITORY": "org/diffbench"}
    assert default_idempotency_key(env) == "github-org-diffbench-77-2"
    assert default_idempotency_key({}) is None


def test_workflow_runs_on_dispatch_and_release_and_calls_the_trigger() -> None:
    workflow = yaml.safe_load((PROJECT / ".github" / "workflows" / "benchmark.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"workflow_dispatch", "release"}
    assert set(triggers["workflow_dispatch"]["inputs"]) == {"config", "shards", "cases", "frameworks", "label"}
    [step] = [s for s in workflow["jobs"]["benchmark"]["steps"] if "run" in s and "trigger.py" in s["run"]]
    assert step["run"].startswith("python deployments/trigger.py diffusion-comparison/adhoc")
    assert step["env"]["PREFECT_API_KEY"] == "${{ secrets.PREFECT_API_KEY }}"
    assert step["env"]["PREFECT_API_AUTH_STRING"] == "${{ secrets.PREFECT_API_AUTH_STRING }}"


def test_a_briefly_unavailable_api_is_retried_with_one_idempotency_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from deployments import trigger

    monkeypatch.setattr(trigger, "RETRY_WAITS_S", (0, 0))
    bodies: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(503 if len(bodies) < 3 else 201, json={"id": "r1", "name": "run"})

    with httpx.Client(base_url="http://api/", transport=httpx.MockTransport(handle)) as http:
        run = trigger.create_run(http, {"id": "d1"}, {"shards": 2}, None, [])
    assert run["id"] == "r1" and len(bodies) == 3
    assert len(set(bodies)) == 1, "every retry carries the same idempotency key"


def scripted_api(monkeypatch: pytest.MonkeyPatch, artifacts: list[dict], fail_artifacts: int = 0) -> list[str]:
    """An API whose run completes at once, with `artifacts` (newest first, as asked); returns the paths called."""
    import httpx

    from deployments import trigger

    monkeypatch.setattr(trigger, "RETRY_WAITS_S", ())
    calls: list[str] = []
    failures = [fail_artifacts]

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("deployments/name/diffusion-comparison/adhoc"):
            return httpx.Response(200, json={"id": "d1", "name": "adhoc",
                                             "parameter_openapi_schema": {"properties": {}}})
        if request.url.path.endswith("create_flow_run"):
            return httpx.Response(201, json={"id": "r1", "name": "calm-otter"})
        if request.url.path.endswith("artifacts/filter"):
            if failures[0]:
                failures[0] -= 1
                return httpx.Response(500, text="database is locked")
            assert json.loads(request.content)["sort"] == "CREATED_DESC"
            return httpx.Response(200, json=artifacts)
        return httpx.Response(200, json={"id": "r1", "name": "pr-5",
                                         "state": {"type": "COMPLETED", "name": "Completed"}})

    monkeypatch.setattr(trigger.Api, "client", lambda self: httpx.Client(base_url="http://api/",
                                                                         transport=httpx.MockTransport(handle)))
    return calls


def verdict_artifact(slower: int) -> dict:
    return {"key": "diffusion-comparison-verdict", "data": f"| t |\n\n{slower} slower, 0 faster, 0 unchanged of 1; …"}


@pytest.mark.parametrize(("artifacts", "fail_on_slower", "code"), [
    ([verdict_artifact(1)], True, 3),
    ([verdict_artifact(1)], False, 0),
    # A retried run made two verdicts: the latest (listed first) is the one that counts.
    ([verdict_artifact(0), verdict_artifact(2)], True, 0),
    # A gate that found nothing to judge never passes silently.
    ([], True, 4),
], ids=["slower-fails", "slower-reported", "latest-of-a-retry", "no-verdict"])
def test_the_verdict_decides_the_exit_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, artifacts: list,
                                           fail_on_slower: bool, code: int) -> None:
    from deployments import trigger

    scripted_api(monkeypatch, artifacts)
    api = trigger.Api("http://prefect/api")
    verdict = tmp_path / "verdict.md"
    assert trigger.trigger(api, "diffusion-comparison/adhoc", {}, "k", [], 5, 0, None, verdict, fail_on_slower) == code
    assert "[Flow run pr-5](http://prefect/runs/flow-run/r1): **COMPLETED**" in verdict.read_text()


def test_an_api_lost_while_following_is_exit_1_with_the_runs_link(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """A progress line is never worth the run: its read failing is skipped; the final read failing is reported."""
    from deployments import trigger

    calls = scripted_api(monkeypatch, [verdict_artifact(0)], fail_artifacts=2)
    api = trigger.Api("http://prefect/api")
    assert trigger.trigger(api, "diffusion-comparison/adhoc", {}, "k", [], 5, 0, None) == 1
    assert "lost the Prefect API while following the run" in capsys.readouterr().err
    assert calls.count("/artifacts/filter") == 2
