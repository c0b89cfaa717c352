"""The real servers, launched by diffbench's launcher: what each engine does beside answering requests.

Each test names the mismatch of the real-engines report (sglang 0.5.23, vllm-omni 0.30.0) it pins down.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from diffbench import client, media
from diffbench.cases import Pair
from diffbench.config import load_matrix
from diffbench.download import Download
from diffbench.engines import ENGINES
from diffbench.engines.environments import EngineEnvironment
from diffbench.errors import ConfigError, RequestFailed, ServerArgsRejected
from diffbench.launcher import Server
from diffbench.measure import Deadline, launch

from .conftest import CPU_ARGS, CPU_ENV, pip_spec
from conftest import make_pair

pytestmark = pytest.mark.real_engine
PNG, JPEG = b"\x89PNG", b"\xff\xd8\xff"


def real_pair(framework: str, model: Path, case_id: str, serve_args: list[str] | None = None,
              extra_env: dict[str, str] | None = None, **case: object) -> Pair:
    options = {"pip": pip_spec(framework), "serve_args": CPU_ARGS.get(framework, []) + (serve_args or []),
               "extra_env": CPU_ENV.get(framework, {}) | (extra_env or {})}
    return make_pair(framework, id=case_id, model=str(model), frameworks={framework: options},
                     matrix={"deadlines": {"ready_s": 600, "request_s": 120, "case_minutes": 20}}, **case)


@contextmanager
def served(pairs: tuple[Pair, ...], environment: EngineEnvironment, workdir: Path) -> Iterator[Server]:
    """A real server for `pairs`, launched as the flow launches it; afterwards no process of it is left."""
    download = Download(pairs[0].model, "local", 0.0)
    server = launch(pairs, download, environment, (), workdir, Deadline.for_case(pairs[0]), "test")
    group = [p for p in psutil.process_iter(["pid"]) if _in_group(p.pid, server.handle.process.pid)]
    try:
        yield server
    finally:
        server.stop()
    # SIGKILL is delivered at once but a process takes a moment to go.
    _, alive = psutil.wait_procs(group, timeout=10)
    assert not alive


def _in_group(pid: int, group: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and os.getpgid(pid) == group
    except (psutil.Error, ProcessLookupError):
        return False


def listening_ports(leader: int) -> set[int]:
    """Ports that the server's processes listen on."""
    ports = set()
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.pid and _in_group(connection.pid, leader):
            ports.add(connection.laddr.port)
    return ports


def post(server: Server, **kwargs: Any) -> httpx.Response:
    """A request the adapter never sends, as another client would."""
    return httpx.post(f"{server.spec.base_url}/v1/images/generations", timeout=60, **kwargs)


def image_bytes(response: httpx.Response) -> bytes:
    assert response.status_code == 200, response.content[:500]
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def test_sglang_server_side_effects(sglang_env, real_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    small = real_pair("sglang", real_models["flux"], "small", width=64, height=64, num_inference_steps=2, seed=1)
    wide = real_pair("sglang", real_models["flux"], "wide", width=96, height=64, num_inference_steps=2, seed=2)
    with served((small, wide), sglang_env, tmp_path / "server") as server:
        port, log_path = server.spec.port, server.log_path
        # Mismatch 6: the HTTP process binds an offline-request broker on P+1, which we keep free.
        assert {port, port + 1} <= listening_ports(server.handle.process.pid)
        assert 1 in ENGINES["sglang"]().side_ports(small)
        # Mismatch 12: asked for PNG, sglang answers PNG; left to itself it answers JPEG.
        ours = client.send(server.http, server.engine.request(wide, server.spec.model_path, None, None), 60)
        assert base64.b64decode(ours.body["data"][0]["b64_json"])[:4] == PNG and ours.decoded.width == 96
        bare = {"model": server.spec.model_path, "prompt": "x", "size": "64x64", "num_inference_steps": 1,
                "response_format": "b64_json"}
        assert image_bytes(post(server, json=bare))[:3] == JPEG
        # Mismatch 10: without a size, sglang uses 1024x1024 whatever the model's default.
        unsized = {k: v for k, v in bare.items() if k != "size"} | {"output_format": "png"}
        assert media.decode_image(image_bytes(post(server, json=unsized))
                                         ).width == 1024
        # Mismatch 8: /v1/images/generations takes JSON only, so a text-to-image case cannot send an image.
        form = post(server, data={"prompt": "x"}, files={"image": ("i.png", PNG)})
        assert form.status_code >= 400, form.status_code
        # Mismatch 7: its outputs land in its own folder, not in ours.
        assert list((tmp_path / "server" / "outputs").glob("*.png")) and not (tmp_path / "outputs").exists()
    # Mismatch 11: the startup warmup runs at every shape this server will be asked for: sglang took both
    # resolutions and started its warmup. Its progress bar names only the shapes it happened to redraw at
    # and reaches the file only when its stream is flushed, so neither shape nor count is read from it.
    log = log_path.read_text(errors="replace")
    assert '"warmup_resolutions": ["64x64", "96x64"]' in log, "sglang did not take both warmup resolutions"
    assert "Warmup requests:" in log, "sglang's startup warmup did not start"
    with pytest.raises(ConfigError, match="text-to-image request cannot carry an image"):
        path = tmp_path / "m.yaml"
        path.write_text("cases: [{id: c, model: /m, task: text-to-image, reference_image: true, "
                        "frameworks: {sglang: {}}}]")
        load_matrix(path)


def test_sglang_refusing_a_flag_fails_the_launch_once(sglang_env, real_models, tmp_path: Path) -> None:
    """sglang's diffusion CLI exits 1 on an unknown flag, without a usage line: still a refusal, not retried."""
    pair = real_pair("sglang", real_models["flux"], "bad", serve_args=["--no-such-flag"], width=64, height=64)
    with pytest.raises(ServerArgsRejected, match="unrecognized arguments: --no-such-flag") as caught:
        launch((pair,), Download(pair.model, "local", 0.0), sglang_env, (), tmp_path, Deadline.for_case(pair), "t")
    assert not caught.value.retryable


def test_vllm_omni_sync_video_timeout_is_ours(vllm_omni_env, real_models, tmp_path: Path) -> None:
    """Mismatch 1: /v1/videos/sync answers 504 after VLLM_OMNI_VIDEO_SYNC_TIMEOUT; we set it to our deadline."""
    video = {"task": "text-to-video", "width": 64, "height": 64, "num_frames": 9, "fps": 8, "num_inference_steps": 2}
    pair = real_pair("vllm-omni", real_models["wan"], "wan", seed=1, **video)
    with served((pair,), vllm_omni_env, tmp_path / "ours") as server:
        environ = psutil.Process(server.handle.process.pid).environ()
        assert environ["VLLM_OMNI_VIDEO_SYNC_TIMEOUT"] == "120"
        sample = server.generate(pair, None)
        assert (sample.num_frames, sample.server_latency_source) == (9, "response")
    hurried = real_pair("vllm-omni", real_models["wan"], "wan", seed=1,
                        extra_env={"VLLM_OMNI_VIDEO_SYNC_TIMEOUT": "0.001"}, **video)
    with served((hurried,), vllm_omni_env, tmp_path / "hurried") as server, pytest.raises(RequestFailed) as caught:
        server.generate(hurried, None)
    assert caught.value.status_code == 504
