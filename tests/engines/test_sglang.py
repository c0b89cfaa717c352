"""sglang adapter: argv, GPU checks, payloads for every task, perf-dump timings."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from diffbench import perf_dump
from diffbench.client import Output, Sample, with_perf_dump
from diffbench.config import load_matrix
from diffbench.engines.base import ServerSpec
from diffbench.engines.sglang import VIDEO_JOB, SGLangEngine
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
    # P+1 is the offline broker every sglang HTTP server binds (mismatch 6).
    assert ENGINE.side_ports(pair) == (1, 5, 55)
    assert ENGINE.side_ports(make_pair(num_gpus=2, frameworks={"sglang": {"serve_args": "--dp-size 2"}})) == (
        1, 5, 55, 56)


def test_server_warmup_gets_the_measured_shapes_of_every_case_it_serves() -> None:
    """sglang warms up by default; without resolutions it warms at the model default and fails open (mismatch 11)."""
    video = make_pair(task="text-to-video", width=1280, height=720, num_frames=81,
                      frameworks={"sglang": {"serve_args": ["--warmup-mode", "server"]}})
    assert ENGINE.command(make_spec(video))[-6:] == [
        "--warmup-mode", "server", "--warmup-resolutions", "1280x720", "--warmup-num-frames", "81"]
    default = make_pair(width=1024, height=1024)
    assert ENGINE.command(make_spec(default))[-2:] == ["--warmup-resolutions", "1024x1024"]
    other = make_pair(id="d", width=512, height=256)
    shared = ServerSpec(default, "127.0.0.1", 30000, "org/model", group=(default, other, default))
    assert ENGINE.command(shared)[-3:] == ["--warmup-resolutions", "1024x1024", "512x256"]
    explicit = make_pair(width=64, height=64, frameworks={"sglang": {
        "serve_args": "--warmup-mode=server --warmup-resolutions 512x512"}})
    assert ENGINE.command(make_spec(explicit)).count("--warmup-resolutions") == 1
    off = make_pair(width=64, height=64, frameworks={"sglang": {"serve_args": "--warmup-mode off"}})
    assert "--warmup-resolutions" not in ENGINE.command(make_spec(off))


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
        if "--warmup-mode" not in serve_args or "server" in serve_args:
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
        (2, "--cfg-parallel-size 2 --enable-cfg-parallel", None),  # the size supersedes the switch
        (4, "--dp-size 2 --tp-size 2", None),
        (2, "--dp-size 2 --ulysses-degree 2", "--dp-size 2 × --ulysses-degree 2 needs 4 GPUs, but it gets 2"),
        # sglang's StoreBoolean takes only true/false: `0` crashes the server at start (mismatch 9).
        (2, "--enable-cfg-parallel 0", "--enable-cfg-parallel takes true or false in sglang, not '0'"),
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
    request = ENGINE.request(pair, "org/model", None, Path("/tmp/dump.json"))
    assert (request.path, request.output, request.files) == ("/v1/images/generations", "image", None)
    assert request.json == {
        "model": "org/model", "prompt": "a cat", "negative_prompt": "blurry", "size": "1024x768",
        "num_inference_steps": 28, "guidance_scale": 3.5, "seed": 42, "perf_dump_path": "/tmp/dump.json",
        "n": 1, "response_format": "b64_json", "output_format": "png", "enable_teacache": True,
    }


def test_model_defaults_are_left_to_the_server() -> None:
    request = ENGINE.request(make_pair(), "org/model", None, None)
    assert request.json == {"model": "org/model", "prompt": "a cat", "n": 1, "response_format": "b64_json",
                            "output_format": "png"}


def test_image_edit_is_multipart_with_the_image() -> None:
    pair = make_pair(task="image-edit", width=1024, height=1024, seed=7)
    request = ENGINE.request(pair, "org/model", IMAGE, Path("/d.json"))
    assert request.path == "/v1/images/edits" and request.json is None
    assert request.files == {"image": ("input.png", IMAGE, "image/png")}
    assert request.data == {"model": "org/model", "prompt": "a cat", "size": "1024x1024", "seed": "7",
                            "perf_dump_path": "/d.json", "n": "1", "response_format": "b64_json",
                            "output_format": "png"}


def test_text_to_video_is_json_and_polled() -> None:
    pair = make_pair(task="text-to-video", width=1280, height=720, num_frames=81, fps=16,
                     sglang_request_extra={"flow_shift": 12.0, "num_frames": None})
    request = ENGINE.request(pair, "org/model", None, None)
    assert (request.path, request.output, request.job) == ("/v1/videos", "video", VIDEO_JOB)
    # A None in sglang's request extras means "leave it to the model", as in sglang's own runner.
    assert request.json == {"model": "org/model", "prompt": "a cat", "size": "1280x720", "fps": 16,
                            "flow_shift": 12.0}


@pytest.mark.parametrize("task", ["image-to-video", "text-image-to-video"])
def test_image_conditioned_video_sends_input_reference(task: str) -> None:
    pair = make_pair(task=task, num_frames=81, reference_image=True)
    request = ENGINE.request(pair, "org/model", IMAGE, None)
    assert request.path == "/v1/videos" and request.job == VIDEO_JOB
    assert request.files == {"input_reference": ("input.png", IMAGE, "image/png")}
    assert request.data == {"model": "org/model", "prompt": "a cat", "num_frames": "81"}


def _output(body: dict) -> Output:
    return Output(1.5, Decoded(64, 64, 1, "0" * 64), body, {}, None)


def _sample(dump_path: Path | None, **fields: object) -> Sample:
    base = dict(client_latency_s=1.5, server_latency_s=1.3, server_latency_source="response", stage_ms={},
                denoise_step_ms=(), peak_reserved_mb=5.0, output_sha256="0", width=64, height=64, num_frames=1,
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
    sample = with_perf_dump(ENGINE, _sample(dump))
    # Peak reserved, as sglang's own response reports it, never peak allocated (mismatch 5).
    assert (sample.server_latency_s, sample.server_latency_source, sample.peak_reserved_mb) == (
        1.2, "perf_dump", 1000.0)
    assert sample.stage_ms == {"FluxTextEncodingStage": 100.0, "DenoisingStage": 1000.0}
    assert sample.denoise_step_ms == (490.0, 510.0) and not sample.perf_dump_missing
    assert sample.client_latency_s == 1.5  # the client's clock is never replaced


def test_missing_perf_dump_keeps_the_response_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("diffbench.engines.sglang.PERF_DUMP_WAIT_S", 0.05)
    sample = with_perf_dump(ENGINE, _sample(tmp_path / "none.json"))
    assert (sample.server_latency_s, sample.server_latency_source, sample.perf_dump_missing) == (1.3, "response", True)
    assert with_perf_dump(ENGINE, _sample(None)) == _sample(None)


def test_response_timings() -> None:
    timing = ENGINE.server_timing(_output({"inference_time_s": 1.3, "peak_memory_mb": 5.0}))
    assert (timing.latency_s, timing.source, timing.peak_reserved_mb) == (1.3, "response", 5.0)
    assert ENGINE.server_timing(_output({})).source == "none"
