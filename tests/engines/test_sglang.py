"""sglang adapter: argv, GPU checks, payloads for every task, perf-dump timings."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from diffbench import perf_dump
from diffbench.client import Output, Sample
from diffbench.config import load_matrix
from diffbench.engines.sglang import SGLangEngine
from diffbench.media import Decoded

from conftest import SGLANG_CONFIGS, make_pair, make_spec

ENGINE = SGLangEngine()
IMAGE = b"\x89PNG fake input"


def test_argv_with_strict_side_ports() -> None:
    pair = make_pair(num_gpus=2, frameworks={"sglang": {"serve_args": "--tp-size 2"}})
    assert ENGINE.command(make_spec(pair, port=31000)) == shlex.split(
        "sglang serve --model-path org/model --host 127.0.0.1 --port 31000 --num-gpus 2"
        " --strict-ports --master-port 31005 --scheduler-port 31055 --tp-size 2"
    )


def test_server_warmup_gets_the_measured_shape() -> None:
    video = make_pair(task="text-to-video", width=1280, height=720, num_frames=81,
                      frameworks={"sglang": {"serve_args": ["--warmup-mode", "server"]}})
    assert ENGINE.command(make_spec(video))[-6:] == [
        "--warmup-mode", "server", "--warmup-resolutions", "1280x720", "--warmup-num-frames", "81"]
    image = make_pair(width=1024, height=1024, frameworks={"sglang": {"serve_args": "--warmup"}})
    assert "--warmup-resolutions" not in ENGINE.command(make_spec(image))
    explicit = make_pair(width=64, height=64, frameworks={"sglang": {
        "serve_args": "--warmup-mode=server --warmup-resolutions 512x512"}})
    assert ENGINE.command(make_spec(explicit)).count("--warmup-resolutions") == 1


@pytest.mark.parametrize("path", SGLANG_CONFIGS, ids=lambda p: p.name[:40])
def test_argv_matches_what_each_shared_config_implies(path: Path) -> None:
    raw = {c["id"]: c for c in json.loads(path.read_text())["cases"]}
    for pair in load_matrix(path).select(frameworks=["sglang"]):
        case = raw[pair.case.id]
        serve_args = shlex.split(case["frameworks"]["sglang"]["serve_args"])
        argv = ENGINE.command(make_spec(pair, port=30000))
        head = ["sglang", "serve", "--model-path", case["model"], "--host", "127.0.0.1", "--port", "30000"]
        gpus = ["--num-gpus", str(case["num_gpus"])] if case["num_gpus"] > 1 else []
        ports = ["--strict-ports", "--master-port", "30005", "--scheduler-port", "30055"]
        warmup = []
        if "server" in serve_args and "--warmup-mode" in serve_args:
            warmup = ["--warmup-resolutions", f"{case['width']}x{case['height']}"]
            if "video" in case["task"]:
                warmup += ["--warmup-num-frames", str(case["num_frames"])]
        assert argv == head + gpus + ports + serve_args + warmup, pair.case.id


@pytest.mark.parametrize(
    ("gpus", "serve_args", "problem"),
    [
        (2, "--tp-size 2", None),
        (4, "--enable-cfg-parallel --ulysses-degree 2", None),
        (2, "--cfg-parallel-size 2", None),
        (4, "--tp-size 2", None),  # the rest goes to sequence parallelism
        (1, "--enable-cfg-parallel", "--enable-cfg-parallel (2) needs a multiple of 2 GPUs, but it gets 1"),
        (3, "--tp-size 2", "--tp-size 2 needs a multiple of 2 GPUs, but it gets 3"),
        (2, "--tp-size 2 --ulysses-degree 2", "--tp-size 2 × --ulysses-degree 2 needs 4 GPUs, but it gets 2"),
        (2, "--enable-cfg-parallel false", None),
    ],
)
def test_gpu_count_must_fit_the_parallel_flags(gpus: int, serve_args: str, problem: str | None) -> None:
    pair = make_pair(num_gpus=gpus, frameworks={"sglang": {"serve_args": serve_args}})
    assert ENGINE.gpu_problem(pair) == problem


def test_environment_has_extra_env_and_assigned_gpus() -> None:
    pair = make_pair(frameworks={"sglang": {"extra_env": {"SGLANG_X": "1"}}})
    assert ENGINE.environment(make_spec(pair, gpus=(2, 3))) == {"SGLANG_X": "1", "CUDA_VISIBLE_DEVICES": "2,3"}
    assert ENGINE.environment(make_spec(pair)) == {"SGLANG_X": "1"}


def test_text_to_image_payload() -> None:
    pair = make_pair(width=1024, height=768, num_inference_steps=28, guidance_scale=3.5, seed=42,
                     negative_prompt="blurry", frameworks={"sglang": {"request_extra": {"enable_teacache": True}}})
    request = ENGINE.request(make_spec(pair), None, Path("/tmp/dump.json"))
    assert (request.path, request.output, request.files) == ("/v1/images/generations", "image", None)
    assert request.json == {
        "model": "org/model", "prompt": "a cat", "negative_prompt": "blurry", "size": "1024x768",
        "num_inference_steps": 28, "guidance_scale": 3.5, "seed": 42, "perf_dump_path": "/tmp/dump.json",
        "n": 1, "response_format": "b64_json", "enable_teacache": True,
    }


def test_model_defaults_are_left_to_the_server() -> None:
    request = ENGINE.request(make_spec(make_pair()), None, None)
    assert request.json == {"model": "org/model", "prompt": "a cat", "n": 1, "response_format": "b64_json"}


def test_image_edit_is_multipart_with_the_image() -> None:
    pair = make_pair(task="image-edit", width=1024, height=1024, seed=7)
    request = ENGINE.request(make_spec(pair), IMAGE, Path("/d.json"))
    assert request.path == "/v1/images/edits" and request.json is None
    assert request.files == {"image": ("input.png", IMAGE, "image/png")}
    assert request.data == {"model": "org/model", "prompt": "a cat", "size": "1024x1024", "seed": "7",
                            "perf_dump_path": "/d.json", "n": "1", "response_format": "b64_json"}


def test_text_to_video_is_json_and_polled() -> None:
    pair = make_pair(task="text-to-video", width=1280, height=720, num_frames=81, fps=16,
                     sglang_request_extra={"flow_shift": 12.0, "num_frames": None})
    request = ENGINE.request(make_spec(pair), None, None)
    assert (request.path, request.output, request.video_mode) == ("/v1/videos", "video", "poll")
    # A None in sglang's request extras means "leave it to the model", as in sglang's own runner.
    assert request.json == {"model": "org/model", "prompt": "a cat", "size": "1280x720", "fps": 16,
                            "flow_shift": 12.0}


@pytest.mark.parametrize("task", ["image-to-video", "text-image-to-video"])
def test_image_conditioned_video_sends_input_reference(task: str) -> None:
    pair = make_pair(task=task, num_frames=81, reference_image=True)
    request = ENGINE.request(make_spec(pair), IMAGE, None)
    assert request.path == "/v1/videos" and request.video_mode == "poll"
    assert request.files == {"input_reference": ("input.png", IMAGE, "image/png")}
    assert request.data == {"model": "org/model", "prompt": "a cat", "num_frames": "81"}


def _output(body: dict) -> Output:
    return Output(1.5, Decoded(64, 64, 1, "0" * 64), body, {}, None)


def _sample(dump_path: Path | None, **fields: object) -> Sample:
    base = dict(client_latency_s=1.5, server_latency_s=1.3, server_latency_source="response", stage_ms={},
                denoise_step_ms=(), peak_memory_mb=5.0, output_sha256="0", width=64, height=64, num_frames=1,
                poll_bound_s=None, perf_dump_path=str(dump_path) if dump_path else None)
    return Sample(**(base | fields))


def test_timings_come_from_the_perf_dump(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    perf_dump.write_atomic(dump, {
        "total_duration_ms": 1200.0, "tag": "server_perf_dump",
        "steps": [{"name": "sglang.FluxTextEncodingStage", "duration_ms": 100.0},
                  {"name": "DenoisingStage", "duration_ms": 1000.0}],
        "denoise_steps_ms": [{"step": 1, "duration_ms": 510.0}, {"step": 0, "duration_ms": 490.0}],
        "memory_checkpoints": {"after": {"allocated_mb": 1, "reserved_mb": 2, "peak_allocated_mb": 900.0,
                                         "peak_reserved_mb": 1000.0}},
    })
    sample = ENGINE.with_perf_dump(_sample(dump))
    assert (sample.server_latency_s, sample.server_latency_source, sample.peak_memory_mb) == (1.2, "perf_dump", 900.0)
    assert sample.stage_ms == {"FluxTextEncodingStage": 100.0, "DenoisingStage": 1000.0}
    assert sample.denoise_step_ms == (490.0, 510.0) and not sample.perf_dump_missing
    assert sample.client_latency_s == 1.5  # the client's clock is never replaced


def test_missing_perf_dump_keeps_the_response_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("diffbench.engines.sglang.PERF_DUMP_WAIT_S", 0.05)
    sample = ENGINE.with_perf_dump(_sample(tmp_path / "none.json"))
    assert (sample.server_latency_s, sample.server_latency_source, sample.perf_dump_missing) == (1.3, "response", True)
    assert ENGINE.with_perf_dump(_sample(None)) == _sample(None)


def test_response_timings() -> None:
    timing = ENGINE.server_timing(_output({"inference_time_s": 1.3, "peak_memory_mb": 5.0}))
    assert (timing.latency_s, timing.source, timing.peak_memory_mb) == (1.3, "response", 5.0)
    assert ENGINE.server_timing(_output({})).source == "none"
