"""Start a deployment's flow run through the Prefect REST API, follow it, and report its verdict.

Used by GitHub Actions (`python deployments/trigger.py FLOW/DEPLOYMENT --param k=v ...`) and as
`diffbench trigger`. Only httpx is needed, so a CI job can run it without installing Prefect or
diffbench.

Exit codes: 0 the run completed; 1 it failed, crashed, was cancelled or timed out, or the API was
lost while following it; 2 nothing was started (bad parameter, unknown deployment, authentication,
unreachable API); with --fail-on-slower, 3 a case is slower than its baseline and 4 no verdict was
published.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
DASHBOARD_ARTIFACT = "diffusion-comparison-dashboard"
# tasks.compare.ARTIFACT_KEY and the count line that diffbench.compare.markdown ends with, spelled out
# (this module needs only httpx).
VERDICT_ARTIFACT = "diffusion-comparison-verdict"
PROGRESS_ARTIFACT = "diffusion-comparison-progress"  # tasks.progress.PROGRESS_KEY
SLOWER_COUNT = re.compile(r"^(\d+) slower, ", re.MULTILINE)
SLOWER_EXIT = 3
NO_VERDICT_EXIT = 4
# diffbench.dashboard.page.TRENDS_HEADING, spelled out: this module needs only httpx.
TRENDS_HEADING = "## Trends"
CLOUD_API = re.compile(r"^https://api\.prefect\.cloud/api/accounts/([^/]+)/workspaces/([^/]+)/?$")


class TriggerError(Exception):
    """Nothing was started; the message says why."""


@dataclass(frozen=True)
class Api:
    """Where the Prefect API is and how to authenticate to it, from the environment."""

    url: str
    api_key: str | None = None
    auth_string: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] = os.environ) -> Api:
        url = env.get("PREFECT_API_URL")
        if not url:
            raise TriggerError("PREFECT_API_URL is not set (e.g. https://prefect.example.com/api)")
        return cls(url.rstrip("/"), env.get("PREFECT_API_KEY") or None, env.get("PREFECT_API_AUTH_STRING") or None)

    def client(self) -> httpx.Client:
        """An HTTP client: Prefect Cloud API key as a bearer token, self-hosted basic auth as user:password."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        auth = tuple(self.auth_string.split(":", 1)) if self.auth_string and ":" in self.auth_string else None
        return httpx.Client(base_url=self.url + "/", headers=headers, auth=auth, timeout=30)

    def run_link(self, flow_run_id: str) -> str:
        if cloud := CLOUD_API.match(self.url):
            return f"https://app.prefect.cloud/account/{cloud[1]}/workspace/{cloud[2]}/runs/flow-run/{flow_run_id}"
        return f"{self.url.removesuffix('/api')}/runs/flow-run/{flow_run_id}"


TRANSIENT = {502, 503, 504}
RETRY_WAITS_S = (1, 2, 4, 8)


def _call(http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One API call, retried while the server is briefly unavailable (busy, or restarting)."""
    for wait in RETRY_WAITS_S:
        try:
            response = http.request(method, url, **kwargs)
            if response.status_code not in TRANSIENT:
                return response
        except httpx.TransportError:
            pass
        time.sleep(wait)
    return http.request(method, url, **kwargs)  # the last try: its failure is the caller's to report


def _checked(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code in (401, 403):
        raise TriggerError(f"{what}: HTTP {response.status_code}: the API refused our credentials; "
                           "check PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING (self-hosted)")
    if response.is_error:
        raise TriggerError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


def parse_params(pairs: list[str]) -> dict[str, str]:
    """`name=value` pairs, values kept as text until the deployment's schema says what they are."""
    params = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise TriggerError(f"--param {pair!r}: expected name=value")
        params[name] = raw
    return params


def _types(schema: dict[str, Any]) -> set[str]:
    return {t for option in [schema, *schema.get("anyOf", [])] if (t := option.get("type"))}


def coerce_params(deployment: dict[str, Any], raw: dict[str, str]) -> dict[str, Any]:
    """Typed parameters by the deployment's schema; unknown names are refused.

    Prefect accepts unknown names and the run then crashes at start, so they stop here.
    Lists may be given as `a,b` (empty: all); other non-text values as JSON.
    """
    properties = (deployment.get("parameter_openapi_schema") or {}).get("properties", {})
    unknown = sorted(set(raw) - set(properties))
    if unknown:
        raise TriggerError(f"unknown parameter(s) {', '.join(unknown)} for {deployment['name']!r}; "
                           f"it takes: {', '.join(sorted(properties))}")
    params: dict[str, Any] = {}
    for name, text in raw.items():
        types = _types(properties[name])
        if text == "" and "null" in types:
            params[name] = None
        elif "array" in types and not text.startswith("["):
            params[name] = [item.strip() for item in text.split(",") if item.strip()]
        elif "string" in types:
            params[name] = text
        else:
            try:
                params[name] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TriggerError(f"--param {name}: {text!r} is not valid JSON for a {'/'.join(types)}") from exc
    return params


def default_idempotency_key(env: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """One key per GitHub Actions run attempt, so retrying the step never starts a second run."""
    if env.get("GITHUB_RUN_ID"):
        repository = env.get("GITHUB_REPOSITORY", "repo").replace("/", "-")
        return f"github-{repository}-{env['GITHUB_RUN_ID']}-{env.get('GITHUB_RUN_ATTEMPT', '1')}"
    return None


def find_deployment(http: httpx.Client, name: str) -> dict[str, Any]:
    flow, sep, deployment = name.partition("/")
    if not sep:
        raise TriggerError(f"deployment {name!r}: expected FLOW/DEPLOYMENT, e.g. diffusion-comparison/adhoc")
    response = _call(http, "GET", f"deployments/name/{flow}/{deployment}")
    if response.status_code == 404:
        raise TriggerError(f"no deployment {name!r} on this Prefect API")
    return _checked(response, f"deployment {name!r}")


def create_run(http: httpx.Client, deployment: dict[str, Any], params: dict[str, Any], key: str | None,
               tags: list[str]) -> dict[str, Any]:
    # Always a key, so that retrying a call the server may have carried out never makes two runs.
    body = {"parameters": params, "tags": tags, "idempotency_key": key or str(uuid.uuid4())}
    return _checked(_call(http, "POST", f"deployments/{deployment['id']}/create_flow_run", json=body),
                    "create flow run")


@dataclass(frozen=True)
class Ending:
    """How the followed run ended: its state type (or TIMEOUT), the state's message, and the run's name by then
    (the flow names its run once it starts: `pr-5`, `adhoc-…`)."""

    state: str
    message: str | None = None
    name: str | None = None


def progress(http: httpx.Client, flow_run_id: str) -> str | None:
    """The run's progress artifact, as its description says it (`3 of 8 case(s) finished`); None when the API
    cannot say now (a progress line is never worth losing the run over)."""
    try:
        return run_artifacts(http, flow_run_id, [PROGRESS_ARTIFACT]).get(PROGRESS_ARTIFACT, (None, None))[1]
    except (httpx.HTTPError, TriggerError):
        return None


def follow(http: httpx.Client, flow_run_id: str, timeout_s: float, poll_s: float) -> Ending:
    """Print each state change and each change of progress until the run ends; return how it ended."""
    deadline, last, last_progress = time.monotonic() + timeout_s, None, None
    while True:
        run = _checked(_call(http, "GET", f"flow_runs/{flow_run_id}"), "read flow run")
        state = run.get("state") or {}
        kind = state.get("type", "UNKNOWN")
        if kind != last:
            print(f"{time.strftime('%H:%M:%S')} {run['name']}: {state.get('name', kind)}", flush=True)
            last = kind
        if (now := progress(http, flow_run_id)) and now != last_progress:
            print(f"{time.strftime('%H:%M:%S')} {run['name']}: {now}", flush=True)
            last_progress = now
        if kind in TERMINAL:
            return Ending(kind, state.get("message") or None, run["name"])
        if time.monotonic() > deadline:
            return Ending("TIMEOUT", name=run["name"])
        time.sleep(poll_s)


def run_artifacts(http: httpx.Client, flow_run_id: str,
                  keys: list[str] | None = None) -> dict[str, tuple[str, str | None]]:
    """A flow run's artifacts (those of `keys`, else all) by key, (data, description) of the latest of each:
    a retried run made one per try."""
    body: dict[str, Any] = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "CREATED_DESC"}
    if keys:
        body["artifacts"]["key"] = {"any_": keys}
    latest: dict[str, tuple[str, str | None]] = {}
    for artifact in _checked(_call(http, "POST", "artifacts/filter", json=body), "read artifacts"):
        if artifact.get("key"):
            latest.setdefault(artifact["key"], (str(artifact["data"]), artifact.get("description")))
    return latest


def dashboard_summary(artifacts: dict[str, tuple[str, str | None]]) -> str | None:
    """The dashboard's header and table (a pull request's has its own key), without the inline charts."""
    page = artifacts.get(DASHBOARD_ARTIFACT) or next(
        (found for key, found in artifacts.items() if key.startswith("pr-") and key.endswith("-dashboard")), None)
    return page[0].split(f"\n{TRENDS_HEADING}")[0] if page else None


def trigger(api: Api, deployment_name: str, raw_params: dict[str, str], key: str | None, tags: list[str],
            timeout_s: float, poll_s: float, summary_path: Path | None, verdict_path: Path | None = None,
            fail_on_slower: bool = False) -> int:
    with api.client() as http:
        try:
            deployment = find_deployment(http, deployment_name)
        except httpx.HTTPError as exc:
            raise TriggerError(f"cannot reach the Prefect API at {api.url}: {exc}") from exc
        params = coerce_params(deployment, raw_params)
        run = create_run(http, deployment, params, key, tags)
        link = api.run_link(run["id"])
        print(f"flow run {run['name']} ({run['id']}): {link}", flush=True)
        try:
            final = follow(http, run["id"], timeout_s, poll_s)
            artifacts = run_artifacts(http, run["id"]) if final.state != "TIMEOUT" else {}
        except (httpx.HTTPError, TriggerError) as exc:
            print(f"lost the Prefect API while following the run, which goes on: {exc}\n  {link}", file=sys.stderr)
            return 1
    verdict = artifacts.get(VERDICT_ARTIFACT, (None, None))[0]
    name = final.name or run["name"]
    footer = f"[Flow run {name}]({link}): **{final.state}**\n"
    if summary_path is not None:
        parts = [dashboard_summary(artifacts) or "_No dashboard was rendered._", verdict, footer]
        with summary_path.open("a") as handle:
            handle.write("\n\n".join(part for part in parts if part))
    if verdict_path is not None:
        verdict_path.write_text(f"{verdict or '_No verdict: the run published none._'}\n\n{footer}")
    print(f"flow run {name} ended {final.state}")
    if final.state != "COMPLETED" and final.message:
        print(f"  {final.message}")
    if final.state != "COMPLETED":
        return 1
    if verdict is None:
        print("no verdict was published (compare_to none, or the comparison failed: see the run's logs)")
        return NO_VERDICT_EXIT if fail_on_slower else 0
    slower = int(match[1]) if (match := SLOWER_COUNT.search(verdict)) else 0
    if slower:
        print(f"{slower} case(s) slower than the baseline")
    return SLOWER_EXIT if slower and fail_on_slower else 0


EPILOG = """\
environment:
  PREFECT_API_URL          the Prefect API, e.g. https://prefect.example.com/api (required)
  PREFECT_API_KEY          Prefect Cloud API key
  PREFECT_API_AUTH_STRING  user:password of a self-hosted server with basic auth
  GITHUB_STEP_SUMMARY      when set, the run's dashboard table, verdict, link and state are appended to it

exit codes:
  0  the run completed
  1  it failed, crashed, was cancelled or timed out (the state's message is printed), or the API was lost
  2  nothing was started: bad parameter, unknown deployment, authentication, unreachable API
  3  with --fail-on-slower: it completed, and its verdict has a case slower than its baseline
  4  with --fail-on-slower: it completed without publishing a verdict
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The trigger's arguments, on `diffbench trigger` and on this file run as a script."""
    parser.description, parser.epilog = __doc__.splitlines()[0], EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. diffusion-comparison/adhoc")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="name=value, repeatable; typed by the deployment's schema (lists as a,b; others as JSON)")
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help="reuses the run already started with this key (default: from GITHUB_RUN_ID and "
                             "GITHUB_RUN_ATTEMPT when set, else a new key)")
    parser.add_argument("--tag", action="append", default=[], metavar="TAG", help="flow run tag, repeatable")
    parser.add_argument("--timeout", type=float, default=6 * 3600, metavar="SECONDS",
                        help="seconds to follow the run (default: 21600)")
    parser.add_argument("--poll", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between state checks (default: 5)")
    parser.add_argument("--verdict-file", type=Path, metavar="PATH",
                        help="write the run's verdict against its baseline (markdown, with the run's link) here")
    parser.add_argument("--fail-on-slower", action="store_true",
                        help="exit 3 when the run completed but a case is slower than its baseline")


def run(args: argparse.Namespace) -> int:
    """Trigger and follow as `args` say; the exit code of EPILOG."""
    summary = Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY") else None
    try:
        return trigger(Api.from_env(), args.deployment, parse_params(args.param),
                       args.idempotency_key or default_idempotency_key(), args.tag, args.timeout, args.poll, summary,
                       args.verdict_file, args.fail_on_slower)
    except TriggerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    script = argparse.ArgumentParser(prog="trigger.py")
    add_arguments(script)
    raise SystemExit(run(script.parse_args()))
