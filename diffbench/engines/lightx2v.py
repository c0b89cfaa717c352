"""LightX2V: `python -m lightx2v.server`, a config file per case, and its task API.

What LightX2V cannot take per request (guidance, CFG on or off) is in the `--config_json` that
diffbench writes for the case, so a LightX2V server serves one case. Its workers keep every
field a request sets for the requests after it, so each request sends every field the case sets.
Wan reads its steps from the config once, at start, and runs without CFG unless the config
enables it. Facts with their source lines: `tests/fixtures/lightx2v/README.md`.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from diffbench import client
from diffbench.cases import FrameworkOptions, Pair
from diffbench.engines.base import Engine, ServerSpec, image_part
from diffbench.errors import DownloadError

CONFIG_FILE = "lightx2v-config.json"
# Inputs and outputs; by default it writes them inside its own install.
CACHE_DIR = "lightx2v-cache"
# Its metrics exporter binds every interface on 8001 unless told; torchrun's rendezvous takes 29500 unless told.
METRIC_OFFSET, MASTER_OFFSET = 1, 2
# The options its argparse knows, with how many values each takes; it reads every other one as a `--key value` pair.
ARGPARSE_FLAGS = {"--model_path": 1, "--model_cls": 1, "--lora_dir": 1, "--warmup": 0, "--host": 1, "--port": 1,
                  "--max_queue_size": 1}
IMAGE_TASKS = frozenset({"image-to-video", "text-image-to-video"})
TASKS = {"text-to-image": "t2i", "text-to-video": "t2v", "image-to-video": "i2v", "text-image-to-video": "ti2v"}
JOB = client.Job("/v1/tasks/{id}/status", lambda job_id, _: f"/v1/tasks/{job_id}/result", id_field="task_id",
                 error=lambda status: f"{status.get('error_type') or 'error'}: {status.get('error') or 'no message'}")


class LightX2VOptions(FrameworkOptions):
    """LightX2V's runner and task (sglang's keys), and config keys added to the case's own."""

    model_cls: str = Field(min_length=1, description="LightX2V's runner, e.g. wan2.1, wan2.2_moe, qwen_image.")
    lightx2v_task: Literal["t2v", "i2v", "t2i", "ti2v"] | None = Field(
        None, description="LightX2V's task; default: from the case's task.")
    lightx2v_config: dict[str, Any] = Field(
        default_factory=dict, description="Config keys of the model (attention types, sample_shift, boundary, "
                                          "parallel); the case's own values win over them.")


def case_config(pair: Pair) -> dict[str, Any]:
    """The `--config_json` of `pair`: its options' keys, then the case's shape, steps and guidance over them."""
    case = pair.case
    options = pair.options
    assert isinstance(options, LightX2VOptions)
    config = dict(options.lightx2v_config)
    if case.num_inference_steps:
        config["infer_steps"] = case.num_inference_steps
    if case.width and case.height:
        config |= {"target_width": case.width, "target_height": case.height}
    if case.is_video and case.num_frames:
        config["target_video_length"] = case.num_frames
    if case.is_video and case.fps:
        config["fps"] = case.fps
    if case.guidance_scale is not None:
        # Off unless enabled: the other engines run CFG at any guidance above 1. MoE runners take one per expert.
        given = config.get("sample_guide_scale")
        experts = len(given) if isinstance(given, list) else 2 if "moe" in options.model_cls else 0
        scale = [case.guidance_scale] * experts if experts else case.guidance_scale
        config |= {"enable_cfg": case.guidance_scale > 1, "sample_guide_scale": scale}
    return config


def parallel_size(config: dict[str, Any]) -> int:
    """The GPUs the config's `parallel` block spans: LightX2V refuses a world of any other size."""
    sizes = [v for k, v in (config.get("parallel") or {}).items() if k.endswith("_p_size") and isinstance(v, int)]
    return math.prod(sizes) if sizes else 1


def argparse_flag(arg: str) -> str | None:
    """The argparse option `arg` names (exactly, or as argparse's unique prefix), or None if it names none.

    Raises ValueError for a prefix of several.
    """
    name = arg.partition("=")[0]
    matches = [flag for flag in ARGPARSE_FLAGS if flag == name] or [f for f in ARGPARSE_FLAGS if f.startswith(name)]
    if len(matches) > 1 and name.startswith("--"):
        raise ValueError(f"{name} is ambiguous to LightX2V's argparse ({', '.join(matches)})")
    return matches[0] if len(matches) == 1 and name.startswith("--") else None


def pair_parser_problem(args: list[str]) -> str | None:
    """What LightX2V's server parser would silently drop: past its argparse flags, it reads `--key value` pairs."""
    rest, index = [], 0
    while index < len(args):
        try:
            flag = argparse_flag(args[index])
        except ValueError as exc:
            return str(exc)
        if flag is None:
            rest.append(args[index])
        index += 1 + (ARGPARSE_FLAGS[flag] if flag and "=" not in args[index] else 0)
    for index in range(0, len(rest), 2):
        key = rest[index]
        if not key.startswith("--") or "=" in key:
            return f"{key!r}: LightX2V reads `--key value` pairs only; this drops it and every option after it"
        if index + 1 >= len(rest) or rest[index + 1].startswith("--"):
            return f"{key} has no value: LightX2V's parser would pair the next option with it and drop the rest"
    return None


class LightX2VEngine(Engine):
    """LightX2V (ModelTC), on CUDA only; one server per case."""

    name = "lightx2v"
    package = "lightx2v"
    options = LightX2VOptions
    shares_server: ClassVar[bool] = False

    def command(self, spec: ServerSpec) -> list[str]:
        pair = spec.pair
        options = pair.options
        assert isinstance(options, LightX2VOptions)
        launcher = ["torchrun", f"--nproc_per_node={pair.num_gpus}", f"--master_port={spec.port + MASTER_OFFSET}"] \
            if pair.num_gpus > 1 else ["python"]
        return [*launcher, "-m", "lightx2v.server", "--model_path", spec.model_path, "--model_cls", options.model_cls,
                "--task", options.lightx2v_task or TASKS[pair.case.task], "--config_json", CONFIG_FILE,
                "--host", spec.host, "--port", str(spec.port), *options.serve_args]

    def prepare(self, spec: ServerSpec, workdir: Path) -> None:
        (workdir / CONFIG_FILE).write_text(json.dumps(case_config(spec.pair), indent=2))

    def side_ports(self, pair: Pair) -> tuple[int, ...]:
        return (METRIC_OFFSET, MASTER_OFFSET) if pair.num_gpus > 1 else (METRIC_OFFSET,)

    def check_model(self, pair: Pair, path: Path) -> None:
        # Original-layout weights (no diffusers model_index.json): a folder with files in it is all that can be told.
        if not any(path.iterdir()):
            raise DownloadError(f"case {pair.case.id!r}: {pair.framework}: model folder {path} is empty")

    def environment(self, spec: ServerSpec) -> dict[str, str]:
        return {"LIGHTX2V_METRIC_PORT": str(spec.port + METRIC_OFFSET), "LIGHTX2V_CACHE_DIR": CACHE_DIR} | \
            super().environment(spec)

    def ready_problem(self, http: client.Http, spec: ServerSpec) -> str | None:
        # Its HTTP server starts only once the model has loaded.
        status = client.call(http, "GET", "/v1/service/status", 1.0, "GET /v1/service/status")
        return None if status.status == 200 else f"/v1/service/status answers {status.status}"

    def option_problems(self, pair: Pair) -> list[tuple[str, str]]:
        problem = pair_parser_problem(pair.options.serve_args)
        return [("serve_args", problem)] if problem else []


    def not_run_reason(self, pair: Pair) -> str | None:
        if pair.case.task not in TASKS:
            return f"LightX2V has no task for {pair.case.task}"
        if pair.case.reference_image and pair.case.task not in IMAGE_TASKS:
            return f"the case sends an input image, and LightX2V's {pair.case.task} task takes none"
        # sglang's own configs give LightX2V 4 GPUs with no parallel block; LightX2V would refuse to start.
        size = parallel_size(case_config(pair))
        if size != pair.num_gpus:
            return (f"it gets {pair.num_gpus} GPU(s), but lightx2v_config's parallel block spans {size}; LightX2V "
                    "needs seq_p_size × cfg_p_size × tensor_p_size to equal the GPU count")
        return None

    def plan_notes(self, pair: Pair) -> list[str]:
        case, config = pair.case, case_config(pair)
        notes = []
        if case.guidance_scale is None and not config.get("enable_cfg"):
            notes.append("no guidance_scale: LightX2V runs without CFG (enable_cfg defaults to false) while the "
                         "others use the model's default guidance: not like for like")
        if case.num_inference_steps is None and "infer_steps" not in config:
            notes.append("no num_inference_steps: LightX2V takes its steps from the model's config.json, the others "
                         "their pipeline's default: not like for like")
        if case.task == "image-to-video":
            notes.append("LightX2V sizes an image-to-video output from its own buckets (config resolution), "
                         "not from the case's size: not like for like unless the sizes agree")
        return [*notes, f"{CONFIG_FILE} {json.dumps(config)}"]

    def endpoint(self, pair: Pair) -> str:
        # With the slash: without it, the path matches DELETE /v1/tasks/{id} and answers 405.
        return "/v1/tasks/video/" if pair.case.is_video else "/v1/tasks/image/"

    def request(self, pair: Pair, model: str, image: bytes | None, perf_dump_path: Path | None) -> client.Request:
        case = pair.case
        fields: dict[str, Any] = {
            "prompt": case.prompt,
            # Sent empty rather than left out: a value sent once stays for the requests after it.
            "negative_prompt": case.negative_prompt or "",
            # Wan keeps the steps it read at start (the config's); qwen_image reads them per request.
            "infer_steps": case.num_inference_steps,
            "seed": case.seed,
            "target_shape": [case.height, case.width] if case.height and case.width else None,
            "target_video_length": case.num_frames if case.is_video else None,
        }
        if case.task in IMAGE_TASKS:
            # A data URL: the prefix tells its decoder the format; a bare string it cannot place is read as a path.
            fields["image_path"] = "data:image/png;base64," + base64.b64encode(image_part(image)[1]).decode()
        body = {k: v for k, v in fields.items() if v is not None} | pair.request_extra
        return client.Request(self.endpoint(pair), "video" if case.is_video else "image", json=body, job=JOB)

    def server_timing(self, output: client.Output) -> client.ServerTiming:
        # Naive local datetimes, set when the worker takes the task and when it finishes it: processing only.
        start, end = output.body.get("start_time"), output.body.get("end_time")
        if not (start and end):
            return client.ServerTiming()
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
        return client.ServerTiming(seconds, "response")
