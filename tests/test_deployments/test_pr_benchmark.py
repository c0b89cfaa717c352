"""The PR workflow's steps, as bash runs them, against the real Prefect server and worker and a local stand-in
for the GitHub REST API: a rerun of the baseline's build is `no change`, a slower build is `slower` (and fails
the job when asked), and the pull request carries one comment, created and then updated."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from deployments import trigger
from deployments.github_pr import MARKER
from diffbench.launcher import free_port
from test_deployments.conftest import AUTH, stored_results

PROJECT = Path(__file__).resolve().parents[2]
WORKFLOW = PROJECT / ".github" / "workflows" / "pr-benchmark.yml"
TOKEN = "ghs_pr-benchmark-test-token"
HEAD = "c0ffee" * 6 + "abcd"


class FakeGitHub:
    """Pull request 5 of org/engine: its head commit and its comments, as the REST API serves them."""

    def __init__(self) -> None:
        # A person's comment that quotes the marker: never ours to edit.
        self.comments: list[dict] = [{"id": 899, "body": f"why is {MARKER} here?", "user": {"type": "User"}}]
        self.calls: list[tuple[str, str, str]] = []  # method, path, Authorization

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        route = path.split("?", maxsplit=1)[0]
        if route == "/repos/org/engine/pulls/5" and method == "GET":
            return 200, {"number": 5, "head": {"sha": HEAD}}
        if route == "/repos/org/engine/issues/5/comments":
            if method == "GET":
                return 200, self.comments
            comment = {"id": 900 + len(self.comments), "body": json.loads(body)["body"],
                       "user": {"login": "github-actions[bot]", "type": "Bot"}}
            self.comments.append(comment)
            return 201, comment
        if route.startswith("/repos/org/engine/issues/comments/") and method == "PATCH":
            [comment] = [c for c in self.comments if str(c["id"]) == route.rsplit("/", 1)[1]]
            comment["body"] = json.loads(body)["body"]
            return 200, comment
        return 404, {"message": "Not Found"}


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHub, str]]:
    fake = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            fake.calls.append((self.command, self.path, self.headers.get("Authorization", "")))
            status, document = fake.answer(self.command, self.path, body)
            content = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield fake, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two builds of the reference engine on the worker: this Python, and one whose server is 400 ms a step slower
    (a Python that starts `diffbench serve` with the step-delay knob raised: a build with a slower default)."""
    slow = tmp_path_factory.mktemp("slow-build") / "bin" / "python"
    slow.parent.mkdir()
    slow.write_text(f'#!/bin/sh\ncase " $* " in *" serve "*) exec {os.sys.executable} "$@" --step-delay-ms 800;; esac\n'
                    f'exec {os.sys.executable} "$@"\n')
    slow.chmod(0o755)
    return {"main": f"python:{os.sys.executable}", "slow": f"python:{slow}"}


@pytest.fixture(scope="module")
def delayed_config(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> Path:
    """One tiny FLUX case whose steps sleep 400 ms: a rerun stays within the 5 % step on a busy CPU."""
    path = tmp_path_factory.mktemp("pr-configs") / "pr.yaml"
    path.write_text(textwrap.dedent(f"""
        measurement_repeats: 5
        deadlines: {{ready_s: 120, request_s: 60, case_minutes: 10}}
        cases:
          - {{id: flux_t2i, model: {tiny_models['flux']}, task: text-to-image, width: 32, height: 32,
              num_inference_steps: 4, seed: 1,
              frameworks: {{diffusers: {{serve_args: --device cpu --step-delay-ms 400}}}}}}
        """))
    return path


def step(name: str) -> dict:
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["benchmark"]["steps"]
    return next(s for s in steps if s.get("name") == name)


def run_step(name: str, env: dict[str, str], replace: dict[str, str]) -> subprocess.CompletedProcess:
    """A workflow step's script under bash, `python` being this interpreter; `replace` edits the script."""
    script = step(name)["run"].replace("python ", f"{os.sys.executable} ")
    for old, new in replace.items():
        assert old in script, old
        script = script.replace(old, new)
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=600,
                          cwd=PROJECT, check=False)


def test_a_pull_requests_build_is_judged_and_its_comment_kept_current(
        stack, worker, api, delayed_config: Path, builds: dict[str, str], github, results_url: str,
        tmp_path: Path) -> None:
    fake, github_url = github
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DIFFBENCH_", "GITHUB_"))} | {
        "PYTHONPATH": str(PROJECT), "PREFECT_API_URL": stack.api_url, "PREFECT_API_KEY": "",
        "PREFECT_API_AUTH_STRING": AUTH, "GITHUB_RUN_ATTEMPT": "1", "GITHUB_REPOSITORY": "org/engine",
        "GITHUB_API_URL": github_url, "GITHUB_TOKEN": TOKEN, "PR": "5", "ENGINE": "diffusers"}
    # The baseline: this build, as the nightly would have measured it.
    baseline = subprocess.run(
        [os.sys.executable, str(PROJECT / "deployments" / "trigger.py"), "diffusion-comparison/adhoc",
         "--param", f"config={delayed_config}", "--param", f"engines={json.dumps({'diffusers': builds['main']})}",
         "--param", "label=pr-baseline", "--param", "compare_to=none"],
        env=base_env, capture_output=True, text=True, timeout=600, cwd=PROJECT, check=False)
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    [baseline_run] = {row[0] for row in stored_results(results_url, "pr-baseline", "r.id")}
    # The step judges against the latest nightly; this stack has none, so the baseline run stands in for it.
    against = {"compare_to=latest-nightly": f"compare_to={baseline_run}",
               "--tag pr-benchmark": f"--tag pr-benchmark --param config={delayed_config}"}
    outputs = []
    for attempt, (build, fail, commit) in enumerate([("main", "", "1234567890abcdef"),
                                                     ("slow", "--fail-on-slower", "")]):
        env = base_env | {"GITHUB_RUN_ID": f"77{attempt}", "COMMIT": commit, "BUILD": builds[build],
                          "FAIL_ON_REGRESSION": fail, "GITHUB_STEP_SUMMARY": str(tmp_path / f"summary-{attempt}.md")}
        bench = run_step("Benchmark the pull request's build against the nightly", env,
                         against | {"verdict.md": str(tmp_path / "verdict.md")})
        comment = run_step("Post the verdict on the pull request", env, {"verdict.md": str(tmp_path / "verdict.md")})
        outputs.append((bench, comment, (tmp_path / "verdict.md").read_text()))

    (main, main_comment, main_verdict), (slow, slow_comment, slow_verdict) = outputs
    assert main.returncode == 0, main.stdout + main.stderr
    assert "| flux_t2i | diffusers | no change |" in main_verdict and "[Flow run pr-5]" in main_verdict, main_verdict
    assert slow.returncode == trigger.SLOWER_EXIT, slow.stdout + slow.stderr
    assert "1 case(s) slower than the baseline" in slow.stdout
    assert "| flux_t2i | diffusers | 🔴 slower |" in slow_verdict, slow_verdict
    assert "| flux_t2i | diffusers | 🔴 slower |" in (tmp_path / "summary-1.md").read_text()
    # One comment on the pull request: created by the first run, updated by the second.
    assert main_comment.returncode == slow_comment.returncode == 0, main_comment.stderr + slow_comment.stderr
    assert main_comment.stdout.startswith("created comment 901")
    assert slow_comment.stdout.startswith("updated comment 901")
    human, only = fake.comments
    assert human["body"] == f"why is {MARKER} here?"
    assert "🔴 slower" in only["body"] and "no change" not in only["body"]
    assert [c[0] for c in fake.calls if "comments" in c[1]] == ["GET", "POST", "GET", "PATCH"]
    # The second run had no commit given: it asked GitHub for the head, and its label names it.
    assert ("GET", "/repos/org/engine/pulls/5", f"Bearer {TOKEN}") in fake.calls
    labels = {row[0] for row in stored_results(results_url, f"org/engine#5@{HEAD[:12]}", "r.label")}
    assert labels == {f"org/engine#5@{HEAD[:12]}"}
    # Kept apart: both pull-request runs are `pr` runs of pull request 5, never `schedule`.
    for label in ("org/engine#5@1234567890ab", f"org/engine#5@{HEAD[:12]}"):
        assert stored_results(results_url, label, "r.trigger, r.pull_request, s.engine_build") == [
            ("pr", 5, f"python: {builds['main' if '1234' in label else 'slow'].removeprefix('python:')}")]
    everything = "".join(o.stdout + o.stderr for run in outputs for o in run[:2]) + slow_verdict
    assert TOKEN not in everything and AUTH.split(":")[1] not in everything
