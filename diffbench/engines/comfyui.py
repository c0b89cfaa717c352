"""ComfyUI: `python main.py` from its source tree, a graph per case, and its job API.

A request submits a graph (`POST /prompt`), follows the job (`GET /api/jobs/{id}`) and downloads
the saved file (`GET /view`). ComfyUI answers an identical graph from its output cache, so every
request carries a fresh nonce on each node but the model loaders: it does the whole work again
without reloading a model. Models load at the first prompt, not at start: the warm-up request
(at least one) is what loads them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from diffbench import client
from diffbench.cases import Pair
from diffbench.engines.base import Engine, ServerSpec, image_part
from diffbench.engines.comfyui_graphs import ComfyUIOptions, Graph, model_files, text_to_image, video, with_nonce
from diffbench.engines.environments import EngineEnvironment
from diffbench.errors import BadOutput, DownloadError

# The server's own folders (input, output, user, custom nodes), relative to its cwd; the models are the case's.
BASE_DIR = "comfyui"
FOLDERS = ("custom_nodes", "input", "output", "user")
# Metadata embeds the submitted graph, nonce included, in every file: equal requests would differ in their bytes.
# The default database lives in the source tree, which may be read-only.
FIXED_ARGS = ("--disable-auto-launch", "--disable-metadata", "--database-url", "sqlite:///:memory:")
TASK_FILES = {
    "text-to-image": ("checkpoint",),
    "text-to-video": ("diffusion_model", "text_encoder", "vae"),
    "image-to-video": ("diffusion_model", "text_encoder", "vae"),
}


def refusal(body: bytes) -> str | None:
    """A refused graph's node errors, one per line: node, class, input and what is wrong."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), dict):
        return None
    lines = [str(answer["error"].get("message", "refused"))]
    for node_id, node in (answer.get("node_errors") or {}).items():
        for error in node.get("errors", []):
            lines.append(f"node {node_id} ({node.get('class_type')}): {error.get('message')}: {error.get('details')}")
    return "ComfyUI refused the graph: " + "; ".join(lines)


def execution_error(status: dict[str, Any]) -> str:
    error = status.get("execution_error") or {}
    return (f"{error.get('node_type')} (node {error.get('node_id')}): {error.get('exception_type')}: "
            f"{str(error.get('exception_message', 'no message')).strip()}")


def output_path(job_id: str, status: dict[str, Any]) -> str:
    """`/view` of the file the graph's one save node wrote; SaveVideo lists its MP4 under `images` too."""
    files = [file for saved in (status.get("outputs") or {}).values() if isinstance(saved, dict)
             for file in saved.get("images") or saved.get("videos") or []]
    if not files:
        raise BadOutput(f"job {job_id} completed without a saved file: outputs {status.get('outputs')}")
    file = files[0]
    query = urlencode({"filename": file["filename"], "subfolder": file.get("subfolder", ""),
                       "type": file.get("type", "output")})
    return f"/view?{query}"


JOB = client.Job("/api/jobs/{id}", output_path, id_field="prompt_id", error=execution_error, refusal=refusal)


def input_name(image: bytes) -> str:
    """The uploaded input image's name: by content, so a rerun overwrites it with the same bytes."""
    return f"diffbench-{hashlib.sha256(image).hexdigest()[:16]}.png"


class ComfyUIEngine(Engine):
    """ComfyUI, one process on one device, one prompt at a time."""

    name = "comfyui"
    options = ComfyUIOptions

    def warmup_requests(self, pair: Pair) -> int:
        # Models load at the first prompt: a case that asks for no warm-up would measure the load.
        return max(pair.warmup_requests, 1)

    def command(self, spec: ServerSpec) -> list[str]:
        options = self._options(spec.pair)
        return ["python", str(options.comfy_root / "main.py"), "--listen", spec.host, "--port", str(spec.port),
                "--base-directory", BASE_DIR, "--models-directory", spec.model_path, *FIXED_ARGS,
                *options.serve_args]

    def prepare(self, spec: ServerSpec, workdir: Path) -> None:
        for folder in FOLDERS:
            (workdir / BASE_DIR / folder).mkdir(parents=True, exist_ok=True)

    def check_model(self, pair: Pair, path: Path) -> None:
        """Every file the case's graph loads is in the models folder: ComfyUI lists only what is there."""
        for folder, option, name in model_files(self.graph(pair, "input.png")):
            if not (path / folder / name).is_file():
                raise DownloadError(f"case {pair.case.id!r}: {pair.framework}: {option} {name!r} is not in "
                                    f"{path / folder}; ComfyUI's loaders list only the files there")

    def version(self, spec: ServerSpec, environment: EngineEnvironment, program: str) -> str | None:
        # ComfyUI is a source tree, not an installed distribution: its version is a file of the tree.
        try:
            text = (self._options(spec.pair).comfy_root / "comfyui_version.py").read_text(errors="replace")
        except OSError:
            return None
        versions = [line.partition("=")[2].strip().strip("\"'") for line in text.splitlines()
                    if line.startswith("__version__")]
        return versions[0] if versions else None

    def ready_problem(self, http: client.Http, spec: ServerSpec) -> str | None:
        # /system_stats answers once every node module is imported; the models load at the first prompt.
        stats = client.call(http, "GET", "/system_stats", 1.0, "GET /system_stats")
        return None if stats.status == 200 else f"/system_stats answers {stats.status}"

    def gpu_problem(self, pair: Pair) -> str | None:
        if pair.num_gpus > 1:
            return (f"ComfyUI runs one prompt at a time on one device; {pair.num_gpus} GPUs would go unused "
                    "(its MultiGPU nodes copy the model per GPU and are not used here)")
        return None

    def option_problems(self, pair: Pair) -> list[tuple[str, str]]:
        options = self._options(pair)
        return [(name, f"ComfyUI's {pair.case.task} graph loads it: give its file name")
                for name in TASK_FILES.get(pair.case.task, ()) if getattr(options, name) is None]

    def not_run_reason(self, pair: Pair) -> str | None:
        if pair.case.comfyui_workflow or self._options(pair).workflow_vars:
            return (f"the case names sglang's own ComfyUI graph ({pair.case.comfyui_workflow or 'workflow_vars'}); "
                    "diffbench builds its graphs from the model files instead (checkpoint, or diffusion_model, "
                    "text_encoder and vae)")
        if pair.case.task not in TASK_FILES:
            return f"diffbench has no ComfyUI graph for {pair.case.task} (it has: {', '.join(TASK_FILES)})"
        if pair.case.reference_image and pair.case.task != "image-to-video":
            return f"the case sends an input image, and ComfyUI's {pair.case.task} graph has no place for one"
        return None

    def plan_notes(self, pair: Pair) -> list[str]:
        case = pair.case
        unset = [name for name, value in (("num_inference_steps", case.num_inference_steps),
                                          ("guidance_scale", case.guidance_scale)) if value is None]
        notes = [f"no {' or '.join(unset)}: ComfyUI's KSampler defaults (20 steps, cfg 8), not the model's: "
                 "not like for like"] if unset else []
        if case.task == "image-to-video":
            notes.append("the image-to-video graph encodes no CLIP vision embedding of the input image (Wan 2.1's "
                         "pipelines do): for Wan 2.1, less work than the other engines: not like for like")
        return [*notes, f"graph {json.dumps(self.graph(pair, 'input.png'))}"]

    def endpoint(self, pair: Pair) -> str:
        return "/prompt"

    def graph(self, pair: Pair, image_name: str | None) -> Graph:
        """The case's graph, without its nonce."""
        options, case = self._options(pair), pair.case
        prefix = f"diffbench/{case.id}"
        if case.is_video:
            return video(case, options, prefix, image_name if case.task == "image-to-video" else None)
        return text_to_image(case, options, prefix)

    def request(self, pair: Pair, model: str, image: bytes | None, perf_dump_path: Path | None) -> client.Request:
        uploads: tuple[client.Upload, ...] = ()
        name = None
        if pair.case.task == "image-to-video":
            _, content, mime = image_part(image)
            name = input_name(content)
            uploads = (client.Upload("/upload/image", {"image": (name, content, mime), "type": "input",
                                                       "overwrite": "true"}),)
        graph = with_nonce(self.graph(pair, name), uuid.uuid4().hex)
        body = {"prompt": graph, "prompt_id": str(uuid.uuid4())} | pair.request_extra
        return client.Request(self.endpoint(pair), "video" if pair.case.is_video else "image", json=body, job=JOB,
                              uploads=uploads)

    def server_timing(self, output: client.Output) -> client.ServerTiming:
        # Milliseconds since the epoch, from the execution_start and execution_success messages.
        status = output.body
        start, end, created = (status.get(k) for k in ("execution_start_time", "execution_end_time", "create_time"))
        if start is None or end is None:
            return client.ServerTiming()
        # Before its execution, so outside the server time: what a queue of earlier prompts cost it.
        stages = {"queued": float(start - created)} if created is not None else {}
        return client.ServerTiming((end - start) / 1000, "response", stages)

    @staticmethod
    def _options(pair: Pair) -> ComfyUIOptions:
        assert isinstance(pair.options, ComfyUIOptions)
        return pair.options
