"""ComfyUI's adapter against responses recorded from the real server (0.33.0, CPU, tiny models).

The recorded graphs and `/object_info` are what the server accepted and declared; the replayed
answers are its own bytes. The real server itself runs in `real/test_comfyui_real.py`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scripted import Answer, serving

from diffbench.client import measure
from diffbench.config import load_matrix
from diffbench.engines.comfyui import ComfyUIEngine
from diffbench.engines.comfyui_graphs import LOADERS, NONCE_INPUT
from diffbench.errors import ConfigError, DownloadError, RequestFailed
from diffbench.groups import server_key
from diffbench.plan import build_plan

from conftest import FIXTURES, SGLANG_CONFIGS, make_pair, make_spec

RECORDED = json.loads((FIXTURES / "comfyui" / "responses.json").read_text())
FILES = {"t2i": {"checkpoint": "tiny-sd15.safetensors"},
         "video": {"diffusion_model": "tiny-wan21-t2v.safetensors", "text_encoder": "tiny-clip-l.safetensors",
                   "text_encoder_type": "stable_diffusion", "vae": "tiny-wan21-vae.safetensors"}}
SHAPE = {"width": 64, "height": 64, "seed": 42, "negative_prompt": "blurry",
         "prompt": "a lighthouse on a cliff at dusk"}
CASES = {
    "t2i": dict(task="text-to-image", num_inference_steps=4, guidance_scale=7.0, **SHAPE),
    "t2v": dict(task="text-to-video", num_inference_steps=2, guidance_scale=5.0, num_frames=9, fps=8, **SHAPE),
    "i2v": dict(task="image-to-video", num_inference_steps=2, guidance_scale=5.0, num_frames=9, fps=8, **SHAPE),
}
ENGINE = ComfyUIEngine()


def comfy_pair(kind: str, **options: object):
    files = FILES["t2i" if kind == "t2i" else "video"]
    if kind == "i2v":
        files = files | {"diffusion_model": "tiny-wan21-i2v.safetensors"}
    return make_pair("comfyui", model="/models", frameworks={"comfyui": {"comfy_root": "/opt/ComfyUI"} | files
                                                             | options}, **CASES[kind])


NOT_COMPARED = (NONCE_INPUT, "_bench_nonce", "image", "filename_prefix")


def shape_of(graph: dict[str, Any]) -> list[tuple[str, tuple[str, ...], tuple[Any, ...]]]:
    """Each node's class, input names and literal values, sorted: a graph's shape, whatever its node ids."""
    return sorted((node["class_type"], tuple(sorted(k for k in node["inputs"] if k not in NOT_COMPARED[:2])),
                   tuple(sorted(repr(v) for k, v in node["inputs"].items()
                                if not isinstance(v, list) and k not in NOT_COMPARED)))
                  for node in graph.values())


def declared_inputs(schema: dict[str, Any]) -> dict[str, list[Any]]:
    """A node's declared inputs by name: V3 dynamic combos' nested inputs count, as the server accepts them."""
    inputs: dict[str, list[Any]] = {}
    for name, spec in {**schema.get("required", {}), **schema.get("optional", {})}.items():
        inputs[name] = spec
        if spec[0] == "COMFY_DYNAMICCOMBO_V3":
            for option in spec[1]["options"]:
                inputs |= declared_inputs(option["inputs"])
    return inputs


def choices(spec: list[Any]) -> list[Any] | None:
    """A combo's allowed values: a legacy list, V3 `COMBO` options, or dynamic combo keys."""
    if isinstance(spec[0], list):
        return spec[0]
    options = spec[1].get("options") if len(spec) > 1 else None
    return [o["key"] if isinstance(o, dict) else o for o in options] if options else None


@pytest.mark.parametrize(("kind", "recorded"), [("t2i", "GET /api/jobs/{id} (t2i, success)"),
                                                ("i2v", "GET /api/jobs/{id} (i2v, success)")])
def test_our_graph_is_the_one_the_real_server_ran(kind: str, recorded: str) -> None:
    ran = RECORDED[recorded]["body"]["workflow"]["prompt"]
    request = ENGINE.request(comfy_pair(kind), "/models", b"\x89PNG" if kind == "i2v" else None, None)
    assert shape_of(request.json["prompt"]) == shape_of(ran)


def test_every_input_we_set_is_one_the_server_declares() -> None:
    declared = RECORDED["GET /object_info (subset)"]["body"]
    for kind in CASES:
        graph = ENGINE.request(comfy_pair(kind), "/models", b"\x89PNG", None).json["prompt"]
        for node in graph.values():
            known = declared_inputs(declared[node["class_type"]]["input"])
            for name, value in node["inputs"].items():
                if name == NONCE_INPUT or isinstance(value, list):
                    continue
                assert name in known, f"{node['class_type']}.{name} is not an input the server declares"
                options = choices(known[name])
                if options and name not in ("ckpt_name", "unet_name", "clip_name", "vae_name", "image"):
                    assert value in options, f"{node['class_type']}.{name}={value!r} not in {options[:8]}"


def test_each_request_carries_a_fresh_nonce_everywhere_but_the_loaders() -> None:
    pair = comfy_pair("t2v")
    first, second = (ENGINE.request(pair, "/models", None, None).json for _ in range(2))
    for graph in (first["prompt"], second["prompt"]):
        assert {node["class_type"] for node in graph.values() if NONCE_INPUT not in node["inputs"]} == LOADERS - {
            "CheckpointLoaderSimple"}
    assert first["prompt"]["sampler"]["inputs"][NONCE_INPUT] != second["prompt"]["sampler"]["inputs"][NONCE_INPUT]
    assert first["prompt_id"] != second["prompt_id"]


def test_the_prompt_is_data_whatever_it_holds() -> None:
    prompt = 'a "quoted" \\ back-slashed\nprompt ${COMFY_ROOT} {"x": 1}'
    pair = make_pair("comfyui", model="/m", task="text-to-image", prompt=prompt,
                     frameworks={"comfyui": {"comfy_root": "/c", "checkpoint": "x.safetensors"}})
    body = json.loads(json.dumps(ENGINE.request(pair, "/m", None, None).json))
    assert body["prompt"]["positive"]["inputs"]["text"] == prompt


def test_image_to_video_uploads_its_input_before_the_clock_under_the_name_its_graph_loads() -> None:
    request = ENGINE.request(comfy_pair("i2v"), "/models", b"\x89PNG-bytes", None)
    (upload,) = request.uploads
    assert upload.path == "/upload/image" and upload.fields["overwrite"] == "true"
    assert request.json["prompt"]["image"]["inputs"]["image"] == upload.fields["image"][0]


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_recorded_job_is_followed_to_its_file_and_timed_by_its_own_timestamps(tmp_path: Path) -> None:
    submitted = RECORDED["POST /prompt (t2i, success)"]["body"]
    done = RECORDED["GET /api/jobs/{id} (t2i, success)"]["body"]
    asked: list[str] = []
    statuses = iter([{"id": done["id"], "status": "in_progress"}, done])

    def handle(method: str, path: str, body: bytes) -> Answer:
        asked.append(f"{method} {path}")
        if path == "/prompt":
            return Answer.of(submitted)
        if path.startswith("/api/jobs/"):
            return Answer.of(next(statuses))
        return Answer(200, png_bytes(), {"Content-Type": "image/png"})

    with serving(handle) as http:
        sample = measure(http, ENGINE, comfy_pair("t2i"), "/models", None, tmp_path)
    assert asked == ["POST /prompt", f"GET /api/jobs/{done['id']}", f"GET /api/jobs/{done['id']}",
                     "GET /view?filename=t2i_00003_.png&subfolder=bench&type=output"]
    assert sample.server_latency_s == pytest.approx((1795963669473 - 1795963668565) / 1000)
    assert sample.server_latency_source == "response" and sample.stage_ms == {"queued": 1.0}
    assert (sample.width, sample.height) == (64, 64) and sample.client_latency_s > 0


def test_a_refused_graph_names_each_node_and_input() -> None:
    recorded = RECORDED["POST /prompt (invalid graph)"]
    with serving(lambda *_: Answer.of(recorded["body"], recorded["status"])) as http, \
            pytest.raises(RequestFailed) as refused:
        measure(http, ENGINE, comfy_pair("t2i"), "/models", None, Path("/tmp"))
    message = str(refused.value)
    assert "ComfyUI refused the graph: Prompt outputs failed validation" in message
    assert "node 1 (CheckpointLoaderSimple): Value not in list: ckpt_name: 'nope.safetensors' not in" in message
    assert "node 4 (EmptyLatentImage): Value 8 smaller than min of 16: width" in message


def test_a_job_that_fails_on_the_server_says_where_and_why() -> None:
    submitted = RECORDED["POST /prompt (runtime error)"]["body"]
    failed = RECORDED["GET /api/jobs/{id} (runtime error)"]["body"]
    with serving(lambda method, path, body: Answer.of(submitted if path == "/prompt" else failed)) as http, \
            pytest.raises(RequestFailed, match=r"failed on the server: VAEDecode \(node 6\): IndexError: tuple index"):
        measure(http, ENGINE, comfy_pair("t2i"), "/models", None, Path("/tmp"))


def test_the_models_folder_must_hold_the_files_the_graph_loads(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    pair = comfy_pair("t2i").model_copy(update={"model": str(models)})
    with pytest.raises(DownloadError, match=r"case 'c': comfyui: checkpoint 'tiny-sd15.safetensors' is not in "
                                            r".*checkpoints"):
        ENGINE.check_model(pair, models)
    (models / "checkpoints" / "tiny-sd15.safetensors").write_bytes(b"weights")
    ENGINE.check_model(pair, models)


def test_the_server_keeps_its_folders_in_its_work_folder_and_reads_the_case_models(tmp_path: Path) -> None:
    spec = make_spec(comfy_pair("t2i"))
    ENGINE.prepare(spec, tmp_path / "work")
    assert (tmp_path / "work" / "comfyui" / "custom_nodes").is_dir()
    argv = ENGINE.command(spec)
    assert argv[:2] == ["python", "/opt/ComfyUI/main.py"] and argv[argv.index("--base-directory") + 1] == "comfyui"
    assert argv[argv.index("--models-directory") + 1] == "/models"
    assert "--disable-metadata" in argv and argv[argv.index("--port") + 1] == "30000"


def test_config_names_the_missing_file_and_refuses_several_gpus(write_config) -> None:
    path = write_config("""
        cases:
          - {id: img, model: /m, task: text-to-image, num_gpus: 2, frameworks: {comfyui: {comfy_root: /c}}}
          - {id: vid, model: /m, task: text-to-video, frameworks: {comfyui: {comfy_root: /c, vae: v.safetensors}}}
        """)
    with pytest.raises(ConfigError) as error:
        load_matrix(path)
    assert error.value.problems == [
        "nightly.yaml: case 'img': frameworks.comfyui.checkpoint: comfyui: ComfyUI's text-to-image graph loads it: "
        "give its file name",
        "nightly.yaml: case 'img': num_gpus: comfyui: ComfyUI runs one prompt at a time on one device; 2 GPUs would "
        "go unused (its MultiGPU nodes copy the model per GPU and are not used here)",
        "nightly.yaml: case 'vid': frameworks.comfyui.diffusion_model: comfyui: ComfyUI's text-to-video graph loads "
        "it: give its file name",
        "nightly.yaml: case 'vid': frameworks.comfyui.text_encoder: comfyui: ComfyUI's text-to-video graph loads it: "
        "give its file name",
    ]


def test_sglangs_own_comfyui_case_loads_and_is_kept_as_not_run_with_why() -> None:
    latest = next(path for path in SGLANG_CONFIGS if "03635624" in path.name)
    why = load_matrix(latest).unsupported[("minimax_h3_i2va_5090_consumer", "comfyui")]
    assert why.error_class == "unsupported" and "minimax_h3_i2va_5090.json" in why.message


def test_plan_shows_the_graph_and_the_warm_up_that_loads_the_models(write_config) -> None:
    path = write_config("""
        warmup_requests: 0
        cases:
          - {id: img, model: /m, task: text-to-image, frameworks: {comfyui: {comfy_root: /c, checkpoint: a.ckpt}}}
        """)
    (row,) = build_plan(load_matrix(path))
    assert row.request["warmup_requests"] == 1 and row.endpoint == "/prompt"
    graph = json.loads(row.notes[-1].removeprefix("graph "))
    assert graph["model"] == {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.ckpt"}}


def test_the_graph_files_are_in_the_series_the_source_tree_is_not_and_decides_the_server() -> None:
    base = comfy_pair("t2i")
    other_tree = comfy_pair("t2i", comfy_root="/srv/ComfyUI-next")
    other_file = comfy_pair("t2i", checkpoint="sdxl.safetensors")
    # A new ComfyUI build continues the series; another checkpoint is another measurement.
    assert base.config_hash == other_tree.config_hash != other_file.config_hash
    assert server_key(base) != server_key(other_tree) and server_key(base) == server_key(other_file)


def test_an_input_image_on_a_text_to_video_case_is_kept_as_not_run() -> None:
    case = comfy_pair("t2v").case.model_copy(update={"reference_image": True})
    pair = comfy_pair("t2v").model_copy(update={"case": case})
    assert "has no place for one" in ENGINE.not_run_reason(pair)
