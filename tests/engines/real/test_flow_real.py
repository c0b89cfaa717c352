"""The whole flow against the real SGLang-Diffusion and vLLM-Omni, on CPU, with the tiny models.

Launch, ready, warm up, benchmark, perf dump, stop; results stored with client, server, stage
and step times; each case of a shared server with its own shape; nothing left running.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import psutil
import pytest
import yaml
from sqlalchemy import text

from diffbench.storage import store
from flows.nightly import diffusion_comparison

from .conftest import CPU_ARGS, CPU_ENV, pip_spec

pytestmark = pytest.mark.real_engine

CASES = """
measurement_repeats: 3
deadlines: {ready_s: 600, request_s: 120, case_minutes: 20}
cases:
  - {id: flux_64, model: FLUX, task: text-to-image, width: 64, height: 64, num_inference_steps: 4, seed: 1}
  - {id: flux_96x64, model: FLUX, task: text-to-image, width: 96, height: 64, num_inference_steps: 2, seed: 2}
  - {id: wan_t2v, model: WAN, task: text-to-video, width: 64, height: 64, num_frames: 9, fps: 8,
     num_inference_steps: 2, seed: 1}
"""


def frameworks(case_id: str) -> dict:
    options = {}
    for framework in ("sglang", "vllm-omni"):
        serve_args = list(CPU_ARGS.get(framework, []))
        if framework == "sglang" and case_id.startswith("wan"):
            serve_args += ["--backend", "diffusers"]  # sglang's native Wan DiT needs its CPU kernels (not on PyPI)
        options[framework] = {"pip": pip_spec(framework), "serve_args": serve_args,
                              "extra_env": CPU_ENV.get(framework, {})}
    return options


def write_config(path: Path, models: dict[str, Path]) -> Path:
    text_ = textwrap.dedent(CASES).replace("FLUX", str(models["flux"])).replace("WAN", str(models["wan"]))
    matrix = yaml.safe_load(text_)
    for case in matrix["cases"]:
        case["frameworks"] = frameworks(case["id"])
    path.write_text(yaml.safe_dump(matrix))
    return path


def test_both_real_engines_through_the_flow(prefect_api, sglang_env, vllm_omni_env, real_models, envs_dir,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFBENCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DIFFBENCH_DASHBOARD_DIR", str(tmp_path / "dashboard"))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    config = write_config(tmp_path / "real.yaml", real_models)
    state = diffusion_comparison(config=str(config), database_url=url, return_state=True)
    assert state.is_completed(), state.message

    engine = store.open_database(url)
    with engine.connect() as connection:
        results = {(r.case_id, r.framework): r for r in connection.execute(text(
            "SELECT id, case_id, framework, status, engine_version, request, serve_argv, n, median_s, "
            "server_median_s FROM results"))}
        samples = connection.execute(text(
            "SELECT result_id, width, height, num_frames, output_sha256, client_latency_s, server_latency_s, "
            "server_latency_source, denoise_step_ms FROM samples")).all()
        stages = connection.execute(text(
            "SELECT s.result_id, t.stage, t.duration_ms, s.client_latency_s FROM stage_timings t "
            "JOIN samples s ON s.id = t.sample_id"
        )).all()
    engine.dispose()
    assert {key: r.status for key, r in results.items()} == {
        (case, fw): "ok" for case in ("flux_64", "flux_96x64", "wan_t2v") for fw in ("sglang", "vllm-omni")}
    # The engine build of its own environment, not whatever diffbench's venv holds.
    assert {fw: {r.engine_version for (_, f), r in results.items() if f == fw} for fw in ("sglang", "vllm-omni")} == {
        "sglang": {"0.5.23"}, "vllm-omni": {"0.30.0"}}
    expected_shape = {"flux_64": (64, 64, 1), "flux_96x64": (96, 64, 1), "wan_t2v": (64, 64, 9)}
    by_result = {r.id: key for key, r in results.items()}
    hashes: dict[tuple[str, str], set[str]] = {}
    for result_id, width, height, frames, sha, client_s, server_s, source, steps in samples:
        case, framework = by_result[result_id]
        assert (width, height, frames) == expected_shape[case], (case, framework)
        hashes.setdefault((case, framework), set()).add(sha)
        # Every sample has the server's own time, below the client's (mismatch 3 for vllm-omni images).
        assert source in ("perf_dump", "response") and 0 < server_s < client_s, (case, framework, server_s, client_s)
        if framework == "sglang" and case.startswith("flux"):
            assert source == "perf_dump"
            assert len(json.loads(steps) if isinstance(steps, str) else steps) == (4 if case == "flux_64" else 2)
    for framework in ("sglang", "vllm-omni"):
        assert hashes[("flux_64", framework)].isdisjoint(hashes[("flux_96x64", framework)])
        assert results[("flux_64", framework)].n == 3
        # Both FLUX cases share one server: the same argv.
        assert results[("flux_64", framework)].serve_argv == results[("flux_96x64", framework)].serve_argv
    # Stage times in ms on both engines: never above the request's own time (mismatch 4).
    stage_names: dict[tuple[str, str], set[str]] = {}
    for result_id, stage, ms, client_s in stages:
        key = by_result[result_id]
        stage_names.setdefault(key, set()).add(stage)
        assert 0 <= ms <= client_s * 1000, (key, stage, ms, client_s)
    assert {"TextEncodingStage", "DenoisingStage", "DecodingStage"} <= stage_names[("flux_64", "sglang")]
    assert "stage_0_gen_ms" in stage_names[("flux_64", "vllm-omni")]
    assert "stage_0_gen_ms" in stage_names[("wan_t2v", "vllm-omni")]
    # Each case asked for its own size, as PNG on both engines (mismatch 12).
    for (case, _), result in results.items():
        request = json.loads(result.request)
        sent = request.get("json") or request.get("form")
        assert sent["size"] == {"flux_64": "64x64", "flux_96x64": "96x64", "wan_t2v": "64x64"}[case]
        if case.startswith("flux"):
            assert sent["output_format"] == "png"
    # Nothing left running, nothing written into our cwd (mismatch 7).
    assert not list((tmp_path / "state").rglob("server.pid"))
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if any(str(tmp_path) in arg for arg in p.info["cmdline"] or [])]
    assert not leftovers
    assert not Path("outputs").exists() and not Path("inputs").exists()
    assert list((tmp_path / "state" / "runs").rglob("outputs/*.png"))  # sglang's copies stay in its own folder
