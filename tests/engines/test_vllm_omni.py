"""vllm-omni adapter: argv, explicit parallelism, payloads for every task, response timings."""

from __future__ import annotations

import shlex

import pytest

from diffbench.client import Output
from diffbench.engines.vllm_omni import VllmOmniEngine, stage_ms
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
     (8, "-tp 2 --ring-degree 2 --ulysses-degree 2", True), (4, "--tensor-parallel-size 2", False),
     # --num-gpus sets the world; data parallelism takes what the other degrees leave (mismatch 9).
     (4, "--num-gpus 4 --usp 2", True), (4, "--num-gpus 4 --usp 3", False), (2, "--num-gpus 4", False),
     (2, "--allgather-degree 2", True)],
)
def test_parallelism_is_explicit(gpus: int, serve_args: str, ok: bool) -> None:
    pair = make_pair("vllm-omni", num_gpus=gpus, frameworks={"vllm-omni": {"serve_args": serve_args}})
    assert (ENGINE.gpu_problem(pair) is None) == ok


def test_text_to_image_payload_has_no_perf_dump() -> None:
    pair = make_pair("vllm-omni", width=1024, height=1024, num_inference_steps=50, seed=1)
    request = ENGINE.request(pair, "org/model", None, None)
    assert request.path == "/v1/images/generations"
    assert request.json == {"model": "org/model", "prompt": "a cat", "size": "1024x1024", "num_inference_steps": 50,
                            "seed": 1, "n": 1, "response_format": "b64_json", "output_format": "png",
                            "return_stage_metrics": True}


def test_image_edit_payload() -> None:
    request = ENGINE.request(make_pair("vllm-omni", task="image-edit", seed=3), "org/model", IMAGE, None)
    assert request.path == "/v1/images/edits"
    assert request.files == {"image": ("input.png", IMAGE, "image/png")}
    assert request.data == {"model": "org/model", "prompt": "a cat", "seed": "3", "n": "1",
                            "response_format": "b64_json", "output_format": "png", "return_stage_metrics": "true"}


@pytest.mark.parametrize("task", ["text-to-video", "image-to-video", "text-image-to-video"])
def test_video_uses_the_sync_endpoint_as_multipart(task: str) -> None:
    pair = make_pair("vllm-omni", task=task, width=832, height=480, num_frames=33, fps=16)
    request = ENGINE.request(pair, "org/model", IMAGE, None)
    assert (request.path, request.output, request.job) == ("/v1/videos/sync", "video", None)
    assert request.json is None
    assert request.data == {"model": "org/model", "prompt": "a cat", "size": "832x480", "num_frames": "33",
                            "fps": "16"}
    expected_files = None if task == "text-to-video" else {"input_reference": ("input.png", IMAGE, "image/png")}
    assert request.files == expected_files


def test_timings_from_sync_video_headers() -> None:
    """Headers as vllm-omni 0.30.0 sent them on CPU; `_ms` stage keys are ms already (mismatch 4)."""
    headers = {"x-inference-time-s": "0.136", "x-stage-durations": '{"queue_wait_ms":0.24,"stage_0_gen_ms":123.7}',
               "x-peak-memory-mb": "0.000"}
    timing = ENGINE.server_timing(Output(0.2, Decoded(8, 8, 9, ""), {}, headers, 0.0))
    assert (timing.latency_s, timing.source, timing.stage_ms, timing.peak_reserved_mb) == (
        0.136, "response", {"queue_wait_ms": 0.24, "stage_0_gen_ms": 123.7}, 0.0)


def test_stage_units_follow_the_key() -> None:
    assert stage_ms({"stage_0_gen_ms": 43.3, "ar_stage_0": 0.5}) == {"stage_0_gen_ms": 43.3, "ar_stage_0": 500.0}


def test_image_server_time_comes_from_stage_metrics() -> None:
    """Image responses carry no inference_time_s (mismatch 3); stage metrics carry the generation time."""
    metrics = {"stage_durations": {"queue_wait_ms": 0.23, "stage_0_gen_ms": 43.3}, "peak_memory_mb": 512.0,
               "stage_metrics": {"0": {"stage_gen_time_ms": 43.1, "denoise_step_latency_ms": 9.0}}}
    timing = ENGINE.server_timing(Output(0.06, Decoded(8, 8, 1, ""), {"metrics": metrics}, {}, None))
    assert (timing.latency_s, timing.source, timing.peak_reserved_mb) == (pytest.approx(0.0431), "response", 512.0)
    assert timing.stage_ms == {"queue_wait_ms": 0.23, "stage_0_gen_ms": 43.3}
    no_metrics = ENGINE.server_timing(Output(2.1, Decoded(8, 8, 1, ""), {}, {}, None))
    assert (no_metrics.source, no_metrics.latency_s) == ("none", None)


def test_sync_timeout_is_lifted_to_our_request_deadline() -> None:
    """/v1/videos/sync answers 504 after VLLM_OMNI_VIDEO_SYNC_TIMEOUT (600 s by default; mismatch 1)."""
    pair = make_pair("vllm-omni", task="text-to-video", matrix={"deadlines": {"request_s": 1800}})
    assert ENGINE.environment(make_spec(pair))["VLLM_OMNI_VIDEO_SYNC_TIMEOUT"] == "1800"
