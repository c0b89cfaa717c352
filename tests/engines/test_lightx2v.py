"""LightX2V's adapter against responses recorded from its own routes, schemas and task manager.

LightX2V needs CUDA, so no server runs here: `tests/fixtures/lightx2v/` holds what its FastAPI
app answered (inference stubbed), at the commit its README names.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scripted import Answer, serving

from diffbench import media
from diffbench.client import measure
from diffbench.config import load_matrix
from diffbench.engines.lightx2v import CONFIG_FILE, LightX2VEngine, pair_parser_problem
from diffbench.errors import ConfigError, DownloadError, RequestFailed
from diffbench.groups import server_groups
from diffbench.plan import build_plan

from conftest import FIXTURES, make_pair, make_spec

RECORDED = json.loads((FIXTURES / "lightx2v" / "responses.json").read_text())
RESPONSES = RECORDED["responses"]
ENGINE = LightX2VEngine()
WAN = {"model_cls": "wan2.1", "lightx2v_config": {"self_attn_1_type": "flash_attn3", "sample_shift": 5.0}}


def wan_pair(task: str = "text-to-video", **case: object):
    fields = dict(task=task, width=832, height=480, num_frames=33, fps=16, num_inference_steps=4,
                  guidance_scale=5.0, seed=42) | case
    return make_pair("lightx2v", model="/models/wan", frameworks={"lightx2v": WAN}, **fields)


def test_every_field_we_send_is_one_its_request_model_reads() -> None:
    """Unknown fields are dropped silently (extra=ignore), as sglang's width, guidance and fps were."""
    for task, schema in (("text-to-video", "VideoTaskRequest"), ("image-to-video", "VideoTaskRequest"),
                         ("text-to-image", "ImageTaskRequest")):
        request = ENGINE.request(wan_pair(task), "/models/wan", b"\x89PNG\r\n\x1a\n", None)
        fields = RECORDED["requests"][schema]["fields"]
        assert set(request.json) <= set(fields), set(request.json) - set(fields)
        assert request.path == RESPONSES["create_video" if request.output == "video" else "create_image"]["path"]
    body = ENGINE.request(wan_pair(), "/m", None, None).json
    assert body["target_shape"] == [480, 832] and body["target_video_length"] == 33 and body["negative_prompt"] == ""


def test_the_route_without_its_slash_is_refused_by_the_server() -> None:
    """The reason the endpoint ends in a slash: recorded 405, not a redirect."""
    assert RESPONSES["create_video_no_trailing_slash"]["status"] == 405
    assert ENGINE.endpoint(wan_pair()) == "/v1/tasks/video/" and ENGINE.endpoint(wan_pair("text-to-image")) == (
        "/v1/tasks/image/")


def test_the_input_image_is_sent_as_a_data_url_the_server_decodes() -> None:
    image = b"\x89PNG\r\n\x1a\nrest"
    request = ENGINE.request(wan_pair("image-to-video"), "/m", image, None)
    prefix, _, encoded = request.json["image_path"].partition(",")
    assert prefix == "data:image/png;base64" and base64.b64decode(encoded, validate=True) == image
    assert "image_path" not in ENGINE.request(wan_pair(), "/m", None, None).json


def mp4() -> bytes:
    return media.encode_video(np.random.default_rng(4).integers(0, 255, (33, 48, 64, 3), dtype=np.uint8), 16)


def replay(statuses: list[str], result: bytes) -> tuple[Any, list[str]]:
    asked: list[str] = []
    submitted = RESPONSES["create_video"]["json"]
    remaining = [RESPONSES[name]["json"] for name in statuses]

    def handle(method: str, path: str, body: bytes) -> Answer:
        asked.append(f"{method} {path}")
        if method == "POST":
            return Answer.of(submitted)
        if path.endswith("/status"):
            return Answer.of(remaining.pop(0))
        return Answer(200, result, {"Content-Type": "video/mp4"})

    return handle, asked


def test_a_recorded_task_is_followed_by_its_status_field_and_timed_by_its_own_times(tmp_path: Path) -> None:
    handle, asked = replay(["status_pending", "status_processing", "status_completed_video"], mp4())
    with serving(handle) as http:
        sample = measure(http, ENGINE, wan_pair(width=64, height=48), "/models/wan", None, tmp_path)
    task = RESPONSES["create_video"]["json"]["task_id"]
    assert asked == ["POST /v1/tasks/video/", *[f"GET /v1/tasks/{task}/status"] * 3, f"GET /v1/tasks/{task}/result"]
    assert sample.server_latency_s == pytest.approx(77.668273) and sample.server_latency_source == "response"
    assert (sample.width, sample.height, sample.num_frames) == (64, 48, 33)


def test_a_failed_task_says_what_failed(tmp_path: Path) -> None:
    handle, _ = replay(["status_processing", "status_failed"], b"")
    with serving(handle) as http, pytest.raises(RequestFailed, match="on the server: OutOfMemoryError: CUDA out"):
        measure(http, ENGINE, wan_pair(), "/models/wan", None, tmp_path)


def test_the_case_config_carries_what_no_request_can(tmp_path: Path) -> None:
    moe = make_pair("lightx2v", model="/m", task="text-to-video", width=1280, height=720, num_frames=81, fps=16,
                    num_inference_steps=40, guidance_scale=4.0,
                    frameworks={"lightx2v": {"model_cls": "wan2.2_moe", "lightx2v_config": {
                        "sample_guide_scale": [4.0, 3.0], "infer_steps": 50, "boundary": 0.875}}})
    spec = make_spec(moe, port=31000)
    ENGINE.prepare(spec, tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config == {"sample_guide_scale": [4.0, 4.0], "enable_cfg": True, "infer_steps": 40, "boundary": 0.875,
                      "target_width": 1280, "target_height": 720, "target_video_length": 81, "fps": 16}
    argv = ENGINE.command(spec)
    assert argv[argv.index("--config_json") + 1] == CONFIG_FILE and argv[argv.index("--task") + 1] == "t2v"
    assert ENGINE.environment(spec)["LIGHTX2V_METRIC_PORT"] == "31001" and ENGINE.side_ports(moe) == (1,)


def test_several_gpus_launch_through_torchrun_with_a_matching_parallel_block() -> None:
    pair = make_pair("lightx2v", model="/m", task="text-to-video", num_gpus=4, frameworks={"lightx2v": {
        "model_cls": "wan2.1", "lightx2v_config": {"parallel": {"seq_p_size": 2, "cfg_p_size": 2}}}})
    # Its own rendezvous port beside the server's: two torchrun servers on a host would both take 29500.
    assert ENGINE.command(make_spec(pair, port=31000))[:5] == [
        "torchrun", "--nproc_per_node=4", "--master_port=31002", "-m", "lightx2v.server"]
    assert ENGINE.side_ports(pair) == (1, 2)
    assert ENGINE.not_run_reason(pair) is None
    lone = pair.model_copy(update={"num_gpus": 2})
    assert "it gets 2 GPU(s), but lightx2v_config's parallel block spans 4" in ENGINE.not_run_reason(lone)


def test_a_moe_runner_gets_one_guidance_per_expert_even_when_its_config_gives_none(tmp_path: Path) -> None:
    moe = make_pair("lightx2v", model="/m", task="text-to-video", guidance_scale=4.0,
                    frameworks={"lightx2v": {"model_cls": "wan2.2_moe", "lightx2v_config": {"sample_shift": 5.0}}})
    ENGINE.prepare(make_spec(moe), tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["sample_guide_scale"] == [4.0, 4.0]


def test_its_model_is_any_folder_with_files_not_a_diffusers_pipeline(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="is empty"):
        ENGINE.check_model(wan_pair(), tmp_path)
    (tmp_path / "Wan2.1_VAE.pth").write_bytes(b"weights")
    ENGINE.check_model(wan_pair(), tmp_path)


def test_an_input_image_on_a_text_task_is_kept_as_not_run() -> None:
    assert "takes none" in ENGINE.not_run_reason(wan_pair(reference_image=True))


def test_a_bare_flag_that_would_drop_every_later_option_is_refused(write_config) -> None:
    # Its argparse's own options, spelt as argparse takes them, are not part of the pairs.
    for args in (["--warmup", "--lora_dir", "/l", "--save_video", "true"], ["--max_queue_size=4", "--a", "b"],
                 ["--warm", "--save_video", "true"], ["--lora", "/l"]):
        assert pair_parser_problem(args) is None, args
    assert "ambiguous" in pair_parser_problem(["--model", "x"])
    assert "has no value" in pair_parser_problem(["--cpu_offload", "--warmup", "--a", "b"])
    path = write_config("""
        cases:
          - {id: v, model: /m, task: text-to-video, frameworks: {lightx2v: {model_cls: wan2.1,
             serve_args: "--cpu_offload --lora_dir /l"}}}
        """)
    with pytest.raises(ConfigError, match=r"case 'v': frameworks.lightx2v.serve_args: lightx2v: --cpu_offload has "
                                          "no value"):
        load_matrix(path)


def test_each_case_gets_its_own_server_and_plan_says_what_is_not_like_for_like(write_config) -> None:
    path = write_config("""
        cases:
          - {id: a, model: /m, task: text-to-video, width: 832, height: 480, num_frames: 33, guidance_scale: 5.0,
             frameworks: {lightx2v: {model_cls: wan2.1}}}
          - {id: b, model: /m, task: image-to-video, width: 832, height: 480, num_frames: 33,
             frameworks: {lightx2v: {model_cls: wan2.1}}}
        """)
    matrix = load_matrix(path)
    assert [len(group.pairs) for group in server_groups(list(matrix.pairs))] == [1, 1]
    notes = {row.case: row.notes for row in build_plan(matrix)}
    assert any("runs without CFG" in note for note in notes["b"]) and any("own buckets" in n for n in notes["b"])
    assert not any("CFG" in note for note in notes["a"])
    assert json.loads(notes["a"][-1].removeprefix("lightx2v-config.json ")) == {
        "target_width": 832, "target_height": 480, "target_video_length": 33, "enable_cfg": True,
        "sample_guide_scale": 5.0}
