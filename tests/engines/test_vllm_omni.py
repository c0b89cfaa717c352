"""vllm-omni adapter: argv, explicit parallelism, payloads for every task, response timings."""

from __future__ import annotations

import json
import shlex

import pytest

from diffbench.client import Output
from diffbench.engines.vllm_omni import VllmOmniEngine
from diffbench.media import Decoded

from conftest import make_pair, make_spec

ENGINE = VllmOmniEngine()
IMAGE = b"\x89PNG fake input"


def test_argv() -> None:
    pair = make_pair("vllm-omni", num_gpus=2, frameworks={"vllm-omni": {"serve_args": "--tensor-parallel-size 2"}})
    assert ENGINE.command(make_spec(pair, port=31000)) == shlex.split(
        "vllm serve org/model --omni --host 127.0.0.1 --port 31000 --tensor-parallel-size 2")


@pytest.mark.parametrize(
    ("gpus", "serve_args", "ok"),
    [(1, "", True), (2, "", False), (4, "--usp 2 --cfg-parallel-size 2", True),
     (8, "-tp 2 --ring-degree 2 --ulysses-degree 2", True), (4, "--tensor-parallel-size 2", False)],
)
def test_parallelism_is_explicit(gpus: int, serve_args: str, ok: bool) -> None:
    pair = make_pair("vllm-omni", num_gpus=gpus, frameworks={"vllm-omni": {"serve_args": serve_args}})
    assert (ENGINE.gpu_problem(pair) is None) == ok


def test_text_to_image_payload_has_no_perf_dump() -> None:
    pair = make_pair("vllm-omni", width=1024, height=1024, num_inference_steps=50, seed=1)
    request = ENGINE.request(make_spec(pair), None, None)
    assert request.path == "/v1/images/generations"
    assert request.json == {"model": "org/model", "prompt": "a cat", "size": "1024x1024", "num_inference_steps": 50,
                            "seed": 1, "n": 1, "response_format": "b64_json"}


def test_image_edit_payload() -> None:
    request = ENGINE.request(make_spec(make_pair("vllm-omni", task="image-edit", seed=3)), IMAGE, None)
    assert request.path == "/v1/images/edits"
    assert request.files == {"image": ("input.png", IMAGE, "image/png")}
    assert request.data == {"model": "org/model", "prompt": "a cat", "seed": "3", "n": "1",
                            "response_format": "b64_json"}


@pytest.mark.parametrize("task", ["text-to-video", "image-to-video", "text-image-to-video"])
def test_video_uses_the_sync_endpoint_as_multipart(task: str) -> None:
    pair = make_pair("vllm-omni", task=task, width=832, height=480, num_frames=33, fps=16)
    request = ENGINE.request(make_spec(pair), IMAGE, None)
    assert (request.path, request.output, request.video_mode) == ("/v1/videos/sync", "video", "sync")
    assert request.json is None
    assert request.data == {"model": "org/model", "prompt": "a cat", "size": "832x480", "num_frames": "33",
                            "fps": "16"}
    expected_files = None if task == "text-to-video" else {"input_reference": ("input.png", IMAGE, "image/png")}
    assert request.files == expected_files


def test_timings_from_sync_video_headers() -> None:
    headers = {"x-inference-time-s": "12.5", "x-stage-durations": json.dumps({"diffusion": 12.0}),
               "x-peak-memory-mb": "30000"}
    timing = ENGINE.server_timing(Output(13.0, Decoded(8, 8, 9, ""), {}, headers, 0.0))
    assert (timing.latency_s, timing.source, timing.stage_ms, timing.peak_memory_mb) == (
        12.5, "response", {"diffusion": 12000.0}, 30000.0)


def test_timings_from_image_metrics() -> None:
    body = {"metrics": {"inference_time_s": 2.0, "stage_durations": {"vae": 0.25}, "peak_memory_mb": 100}}
    timing = ENGINE.server_timing(Output(2.1, Decoded(8, 8, 1, ""), body, {}, None))
    assert (timing.latency_s, timing.stage_ms, timing.peak_memory_mb) == (2.0, {"vae": 250.0}, 100.0)
    assert ENGINE.server_timing(Output(2.1, Decoded(8, 8, 1, ""), {}, {}, None)).source == "none"
