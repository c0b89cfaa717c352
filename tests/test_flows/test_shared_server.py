"""Cases that share a server are each measured with their own request (issue: shared servers)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from diffbench.cli import main
from diffbench.storage import store

SHARED = """
measurement_repeats: 2
auto_repeats: {{target: 0.05, min_requests: 4, max_requests: 12, max_seconds: 60}}
deadlines: {{ready_s: 120, request_s: 60, case_minutes: 10}}
cases:
  - {{id: small, model: {flux}, task: text-to-image, width: 32, height: 32, num_inference_steps: 1, seed: 1,
      measurement_repeats: auto, frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
  - {{id: large, model: {flux}, task: text-to-image, width: 128, height: 96, num_inference_steps: 6, seed: 2,
      frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
  - {{id: default, model: {flux}, task: text-to-image, seed: 3, warmup_requests: 0,
      frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
"""


def run(matrix: str, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`diffbench run` on `matrix` (tiny FLUX as {flux}) with its own state; its exit code and database URL."""
    monkeypatch.setenv("DIFFBENCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DIFFBENCH_DASHBOARD_DIR", str(tmp_path / "dashboard"))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    config = tmp_path / "matrix.yaml"
    config.write_text(textwrap.dedent(matrix).format(flux=tiny_models["flux"]))
    return main(["run", "--config", str(config), "--database-url", url]), url


def test_each_case_on_a_shared_server_gets_its_own_request(prefect_api, tiny_models, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    code, url = run(SHARED, tiny_models, tmp_path, monkeypatch)
    assert code == 0

    engine = store.open_database(url)
    with engine.connect() as connection:
        samples = connection.execute(text(
            "SELECT r.case_id, s.width, s.height, s.output_sha256, s.client_latency_s, "
            "json_array_length(s.denoise_step_ms) FROM samples s JOIN results r ON r.id = s.result_id")).all()
        results = {case: (argv, json.loads(request), median) for case, argv, request, median in connection.execute(
            text("SELECT case_id, serve_argv, request, median_s FROM results"))}
        intervals = {case: (n, low, median, high) for case, n, low, median, high in connection.execute(
            text("SELECT case_id, n, ci_low_s, median_s, ci_high_s FROM results"))}
    engine.dispose()
    by_case: dict[str, list] = {}
    for case_id, *rest in samples:
        by_case.setdefault(case_id, []).append(rest)
    # One server for all three: the same argv, one server log.
    assert len({str(argv) for argv, _, _ in results.values()}) == 1
    assert len(list((tmp_path / "state" / "runs").rglob("server.log"))) == 1
    # Each case's own shape and steps; the model default (FLUX: 1024x1024, 28 steps) where the case has none.
    assert {case: {(w, h, steps) for w, h, _, _, steps in rows} for case, rows in by_case.items()} == {
        "small": {(32, 32, 1)}, "large": {(128, 96, 6)}, "default": {(1024, 1024, 28)}}
    hashes = {case: {sha for _, _, sha, _, _ in rows} for case, rows in by_case.items()}
    assert all(len(h) == 1 for h in hashes.values())  # a fixed seed gives the same output each time
    assert len(set().union(*hashes.values())) == 3
    # More pixels and more steps cost more time.
    medians = {case: median for case, (_, _, median) in results.items()}
    assert medians["small"] < medians["large"] < medians["default"]
    # What was sent is stored per case, each with its own size, steps and seed.
    requests = {case: request["json"] for case, (_, request, _) in results.items()}
    assert (requests["small"]["size"], requests["small"]["num_inference_steps"], requests["small"]["seed"]) == (
        "32x32", 1, 1)
    assert (requests["large"]["size"], requests["large"]["num_inference_steps"]) == ("128x96", 6)
    assert "size" not in requests["default"] and requests["default"]["seed"] == 3
    dumps = {case: request["json"]["perf_dump_path"] for case, (_, request, _) in results.items()}
    assert all(f"/cases/{case}/" in path for case, path in dumps.items())
    # Each median is stored with its bootstrap interval; `auto` measured until it was narrow enough (or 12).
    assert all(low <= median <= high for _, low, median, high in intervals.values())
    assert intervals["large"][0] == intervals["default"][0] == 2
    n, low, median, high = intervals["small"]
    assert 4 <= n <= 12 and ((high - low) / 2 / median <= 0.05 or n == 12)


AFTER_A_TIMEOUT = """
measurement_repeats: 1
warmup_requests: 0
deadlines: {{ready_s: 120, request_s: 60, case_minutes: 10}}
cases:
  - {{id: hurried, model: {flux}, task: text-to-image, width: 64, height: 64, num_inference_steps: 4,
      deadlines: {{request_s: 0.01}}, frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
  - {{id: after, model: {flux}, task: text-to-image, width: 32, height: 32, num_inference_steps: 1,
      frameworks: {{diffusers: {{serve_args: --device cpu}}}}}}
  - {{id: no_env_a, model: {flux}, task: text-to-image,
      frameworks: {{sglang: {{pip: no-such-package-diffbench==1.0}}}}}}
  - {{id: no_env_b, model: {flux}, task: text-to-image,
      frameworks: {{sglang: {{pip: no-such-package-diffbench==1.0}}}}}}
"""


def test_a_server_left_busy_is_replaced_and_a_missing_environment_fails_its_group(
        prefect_api, tiny_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, url = run(AFTER_A_TIMEOUT, tiny_models, tmp_path, monkeypatch)
    assert code == 1

    engine = store.open_database(url)
    with engine.connect() as connection:
        rows = {r[0]: r[1:] for r in connection.execute(text(
            "SELECT case_id, status, error_class, error_message, n FROM results"))}
    engine.dispose()
    assert rows["hurried"][:2] == ("failed", "request_timeout")
    # The server may still be busy with the abandoned request: the next case got a new one.
    assert rows["after"][0] == "ok" and rows["after"][3] == 1
    assert len(list((tmp_path / "state" / "runs").rglob("server.log"))) == 2
    # The environment is got once per group, before any case's clock starts; every case keeps its error.
    for case in ("no_env_a", "no_env_b"):
        assert rows[case][:2] == ("failed", "environment") and "no-such-package-diffbench" in rows[case][2]
