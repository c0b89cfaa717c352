"""The real ComfyUI server (0.33.0, from its source snapshot) on CPU, with tiny SD1.5- and Wan2.1-shaped models.

The whole flow on one server for text-to-image, text-to-video and image-to-video; and the cache
test: equal requests both do the work again, with the models loaded once.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text

from diffbench import client
from diffbench.config import load_matrix
from diffbench.engines import ServerSpec
from diffbench.engines.comfyui import ComfyUIEngine
from diffbench.engines.comfyui_graphs import LOADERS
from diffbench.engines.environments import EngineEnvironment
from diffbench.launcher import Server, free_port
from diffbench.storage import store
from flows.nightly import diffusion_comparison

pytestmark = pytest.mark.real_engine

# No warm-up asked for: ComfyUI gets one anyway, since its first prompt loads the models. The first case of the
# shared server names a file the models folder lacks: it fails alone, and the server starts for the others.
CASES = """
measurement_repeats: 3
warmup_requests: 0
deadlines: {{ready_s: 300, request_s: 120, case_minutes: 20}}
cases:
  - {{id: sd15_missing, model: {models}, task: text-to-image, width: 64, height: 64, num_inference_steps: 4,
     frameworks: {{comfyui: {{checkpoint: missing.safetensors, {common}}}}}}}
  - {{id: sd15_t2i, model: {models}, task: text-to-image, width: 64, height: 64, num_inference_steps: 4,
     guidance_scale: 7.0, seed: 42, negative_prompt: blurry,
     frameworks: {{comfyui: {{checkpoint: tiny-sd15.safetensors, {common}}}}}}}
  - {{id: wan_t2v, model: {models}, task: text-to-video, width: 64, height: 64, num_frames: 9, fps: 8,
     num_inference_steps: 2, guidance_scale: 5.0, seed: 42,
     frameworks: {{comfyui: {{diffusion_model: tiny-wan21-t2v.safetensors, {wan}, {common}}}}}}}
  - {{id: wan_i2v, model: {models}, task: image-to-video, width: 64, height: 64, num_frames: 9, fps: 8,
     num_inference_steps: 2, guidance_scale: 5.0, seed: 42,
     frameworks: {{comfyui: {{diffusion_model: tiny-wan21-i2v.safetensors, {wan}, {common}}}}}}}
"""
# The tiny Wan models are conditioned by CLIP-L (their metadata says text_dim 768), not umt5-xxl.
WAN = "text_encoder: tiny-clip-l.safetensors, text_encoder_type: stable_diffusion, vae: tiny-wan21-vae.safetensors"


def write_cases(path: Path, models: Path, root: Path, environment: EngineEnvironment) -> Path:
    common = f"comfy_root: {root / 'ComfyUI'}, python: {environment.python}, serve_args: --cpu"
    path.write_text(textwrap.dedent(CASES).format(models=models, common=common, wan=WAN))
    return path


def leftovers(folder: Path) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if any(str(folder) in arg for arg in p.info["cmdline"] or [])]


def test_comfyui_through_the_flow(prefect_api, comfyui_root, comfyui_env, comfyui_models, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFBENCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DIFFBENCH_DASHBOARD_DIR", str(tmp_path / "dashboard"))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    config = write_cases(tmp_path / "comfyui.yaml", comfyui_models, comfyui_root, comfyui_env)
    state = diffusion_comparison(config=str(config), database_url=url, return_state=True)
    assert state.is_failed() and "1 case(s) failed: sd15_missing/comfyui" in state.message, state.message

    engine = store.open_database(url)
    with engine.connect() as connection:
        results = {r.case_id: r for r in connection.execute(text(
            "SELECT id, case_id, status, engine_version, serve_argv, n, first_request_latency_s, error_class, "
            "error_message FROM results"))}
        samples = connection.execute(text(
            "SELECT result_id, width, height, num_frames, client_latency_s, server_latency_s, server_latency_source "
            "FROM samples")).all()
    engine.dispose()
    missing = results.pop("sd15_missing")
    assert (missing.status, missing.error_class) == ("failed", "download")
    assert "checkpoint 'missing.safetensors' is not in" in missing.error_message
    assert {case: (r.status, r.n, r.engine_version) for case, r in results.items()} == {
        case: ("ok", 3, "0.33.0") for case in ("sd15_t2i", "wan_t2v", "wan_i2v")}, results
    # One launch serves all three: same models folder, same flags; each case warmed up first.
    assert len({r.serve_argv for r in results.values()}) == 1
    assert all(r.first_request_latency_s > 0 for r in results.values())
    case_of = {r.id: case for case, r in results.items()}
    shapes = {"sd15_t2i": (64, 64, 1), "wan_t2v": (64, 64, 9), "wan_i2v": (64, 64, 9)}
    for result_id, width, height, frames, client_s, server_s, source in samples:
        assert (width, height, frames) == shapes[case_of[result_id]]
        # The server's execution time, from its own timestamps, within the client's (which adds the download).
        assert source == "response" and 0 < server_s <= client_s, (case_of[result_id], server_s, client_s)
    assert len(samples) == 9
    assert not leftovers(tmp_path) and not list((tmp_path / "state").rglob("server.pid"))


def test_equal_requests_both_do_the_work_with_the_models_loaded_once(comfyui_root, comfyui_env, comfyui_models,
                                                                    tmp_path: Path) -> None:
    config = write_cases(tmp_path / "comfyui.yaml", comfyui_models, comfyui_root, comfyui_env)
    pair = next(p for p in load_matrix(config).pairs if p.case.id == "sd15_t2i")
    spec = ServerSpec(pair, "127.0.0.1", free_port(), str(comfyui_models))
    with Server.start(ComfyUIEngine(), spec, tmp_path / "server", environment=comfyui_env) as server:
        server.wait_ready()
        samples = [server.generate(pair, None) for _ in range(3)]
        history = client.call(server.http, "GET", "/history", 10, "GET /history").json()
    runs = [entry["status"]["messages"] for entry in history.values()]
    assert len(runs) == 3 and all(entry["outputs"] for entry in history.values())
    graph = ComfyUIEngine().graph(pair, None)
    loaders = {node_id for node_id, node in graph.items() if node["class_type"] in LOADERS}
    cached = [set(next(data["nodes"] for event, data in messages if event == "execution_cached")) for messages in runs]
    # The first loads the checkpoint; the others reuse it, and nothing else of theirs comes from the cache.
    assert sorted(map(sorted, cached)) == [[], sorted(loaders), sorted(loaders)]
    # Each did the sampling again, and equal requests gave equal bytes (no metadata in the file).
    assert all(s.server_latency_s > 0.05 for s in samples[1:]), [s.server_latency_s for s in samples]
    assert len({s.output_sha256 for s in samples}) == 1
    assert not leftovers(tmp_path)
